# TerraMind for QGIS. The README gives two commands: `make demo` and `make test`.
# Both set up what is missing first (Debian packages, the project venv), then run.
SHELL        := /bin/bash
VENV         ?= .venv
PY           := $(VENV)/bin/python
PLUGIN_NAME  := terramind_qgis
PLUGIN_PATH  := $(CURDIR)/.pluginpath
APT_PKGS     := qgis python3-qgis qgis-providers python3-venv xvfb xauth
# The terratorch reference venv (dev tool for goldens and benchmarks only); built on demand by
# tools/reference/setup-terratorch.sh (REF_VENV chooses where; REF_PY=/path/to/python skips it).
REF_PY       ?= $(shell bash tools/reference/setup-terratorch.sh 2>/dev/null | tail -n 1)
PYTEST_ARGS  ?=
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: test test-fast lint demo bench goldens package setup system-deps plugin-link test-unit test-qgis test-gui clean

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Static checks: ruff (pyproject.toml) and the layering rules (tests/unit/test_layering.py).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests/unit/test_layering.py

# The inner loop: everything but the tests marked slow (full-size goldens, real environments, the desktop).
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-qgis: setup
	$(PY) -m pytest tests/qgis $(PYTEST_ARGS)

# QGIS desktop under Xvfb: opens our dialogs, saves screenshots to gui-shots/ (tools/gui_shot.py).
test-gui: setup
	$(PY) -m pytest tests/qgis/test_gui.py $(PYTEST_ARGS)

demo: setup
	$(PY) tools/demo.py --out demo-output

bench: setup
	REF_PY="$(REF_PY)" $(PY) tools/bench/run_bench.py --out bench-results

# Regenerates the golden tensors with the reference implementation (terratorch, a dev tool only).
goldens: plugin-link
	@ref="$(REF_PY)"; test -x "$$ref" || { echo "reference venv missing: run tools/reference/setup-terratorch.sh"; exit 1; }; \
	set -e; export PYTHONPATH=$(PLUGIN_PATH); \
	nice -n 5 "$$ref" tools/goldens/tokenizers.py; \
	nice -n 5 "$$ref" tools/goldens/terramind.py --variants tiny base --e2e; \
	nice -n 5 "$$ref" tools/goldens/checkpoint_layouts.py; \
	nice -n 5 "$$ref" tools/goldens/segmentation.py; \
	nice -n 5 "$$ref" tools/goldens/temporal.py; \
	nice -n 5 "$$ref" tools/goldens/embeddings.py; \
	nice -n 5 "$$ref" tools/goldens/training.py

# The plugin ZIP for Plugins > Manage and Install Plugins > Install from ZIP and plugins.qgis.org:
# dist/terramind_qgis-<version>.zip, checked against the plugin repository's rules (tools/package.py).
package:
	python3 tools/package.py --out dist

setup: system-deps plugin-link $(VENV)/.installed

# QGIS 3.40 LTR comes from Debian 12's bookworm-backports (plain bookworm has 3.22).
QGIS_SUITE   := bookworm-backports
QGIS_MIN     := 3.40
system-deps:
	@if ! dpkg -s $(APT_PKGS) >/dev/null 2>&1 || ! dpkg --compare-versions "$$(dpkg-query -W -f='$${Version}' qgis 2>/dev/null)" ge $(QGIS_MIN); then \
	  echo "installing Debian packages: $(APT_PKGS) (QGIS from $(QGIS_SUITE))"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  if ! grep -rqsE --include='*.list' --include='*.sources' '^[^#]*$(QGIS_SUITE)' /etc/apt/sources.list /etc/apt/sources.list.d/; then \
	    echo "deb http://deb.debian.org/debian $(QGIS_SUITE) main" | $$SUDO tee /etc/apt/sources.list.d/$(QGIS_SUITE).list >/dev/null; \
	  fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends -t $(QGIS_SUITE) $(APT_PKGS); \
	fi

plugin-link:
	@mkdir -p $(PLUGIN_PATH) && ln -sfn .. $(PLUGIN_PATH)/$(PLUGIN_NAME)

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q -c constraints.txt -r requirements-dev.txt
	$(PY) -c "import qgis.core, osgeo.gdal_array, torch, rasterio, onnxruntime, huggingface_hub; print('venv ok')"
	touch $@

clean:
	rm -rf $(VENV) $(PLUGIN_PATH) .pytest_cache demo-output dist
