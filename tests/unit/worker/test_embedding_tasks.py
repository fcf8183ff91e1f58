"""The embedding tasks in the worker (in process, as the worker runs them): embed, similarity, cluster,
classify; with the reduced test TerraMind (untrained, deterministic) on the real example patches.

Expected values are recomputed here from the embedding raster with plain numpy (cosines, nearest
centres, the upsampling), so the tests check the tasks' arithmetic and placement, not themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from worker_fixtures import run_worker, write_job

from terramind_qgis.models.core.embeddings import TAG
from terramind_qgis.models.core.errors import CancelledError
from testlib.errors import refused
from testlib.paths import CATALOGUE, example
from testlib.progress import RecordingProgress
from testlib.tasks import run_task, validate

S2 = str(example("S2L2A"))
with rasterio.open(S2) as _src:
    CRS, T = _src.crs.to_wkt(), _src.transform


def embed_job(tmp: Path, name: str = "emb.tif", **params) -> dict:
    pca = params.pop("pca", False)
    outputs = {"embeddings": str(tmp / name), **({"pca": str(tmp / f"pca_{name}")} if pca else {})}
    return {"protocol": 1, "task": "embed", "inputs": params.pop("inputs", {"S2L2A": {"path": S2, "name": "s2"}}),
            "outputs": outputs, "model": {"id": "test_terramind_tiny", "untrained": True, "catalogue_paths": [str(CATALOGUE)]},
            "params": params, "tiling": params.pop("tiling", {"tile_size": 128, "overlap": 32, "batch_size": 4}),
            "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("emb")
    run_task(embed_job(tmp))
    return str(tmp / "emb.tif")


def point(px: float, py: float) -> dict:
    """A point at working-grid pixel (px, py) of the example patch."""
    return {"type": "Point", "coordinates": [T.c + px * 10, T.f - py * 10]}


def square(px: float, py: float, size: float) -> dict:
    x0, y0, s = T.c + px * 10, T.f - py * 10, size * 10
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x0 + s, y0], [x0 + s, y0 - s], [x0, y0 - s], [x0, y0]]]}


def features(*geoms, classes=None) -> dict:
    return {"crs": CRS, "features": [{"id": i + 1, "geometry": g, **({"class": classes[i]} if classes else {})}
                                     for i, g in enumerate(geoms)]}  # fmt: skip


def derived_job(task: str, emb: str, outputs: dict, **params) -> dict:
    return {"protocol": 1, "task": task, "inputs": {"EMBEDDINGS": {"path": emb, "name": "emb"}}, "outputs": outputs,
            "model": {"id": "embeddings"}, "params": params, "device": "cpu"}  # fmt: skip


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.tags()


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ----------------------------------------------------------------------------- embed
def test_embedding_raster_is_the_token_grid_and_describes_itself(embeddings):
    data, profile, tags = read(embeddings)
    assert data.shape == (64, 14, 14) and profile["dtype"] == "float32"
    t = profile["transform"]
    assert (t.a, t.e, t.c, t.f) == (160.0, -160.0, T.c, T.f)  # 16 x the pixel size, same origin
    info = json.loads(tags[TAG])
    assert info["model_id"] == "test_terramind_tiny" and info["untrained"] is True
    assert (info["modalities"], info["merge"], info["layers"], info["dim"]) == (["S2L2A"], "mean", [2], 64)
    assert info["token_grid"] == [14, 14] and info["input_grid"] == [224, 224]
    assert tags["TERRAMIND_UNTRAINED"] == "YES"


def test_float16_and_pca_views(tmp_path, embeddings):
    result = run_task(embed_job(tmp_path, "half.tif", dtype="float16", pca=True))
    half, profile, _ = read(tmp_path / "half.tif")
    full, _, _ = read(embeddings)
    assert profile["nodata"] == -65504.0
    np.testing.assert_allclose(half, full, rtol=2e-3, atol=2e-3)  # half floats: 11 significant bits
    pcs, pca_profile, pca_tags = read(tmp_path / "pca_half.tif")
    assert pcs.shape == (3, 14, 14) and "TERRAMIND_EMBEDDING_PCA" in pca_tags and TAG not in pca_tags
    x = half.reshape(64, -1).T.astype(np.float64)
    x -= x.mean(axis=0)
    var = pcs.reshape(3, -1).astype(np.float64).var(axis=1)
    assert var[0] >= var[1] >= var[2] > 0  # components in order of variance
    top = np.linalg.svd(x, compute_uv=False)[:3] ** 2 / (len(x) - 1)
    np.testing.assert_allclose(var * len(x) / (len(x) - 1), top, rtol=1e-3)  # the top principal components
    ratio = result["metrics"]["explained_variance"]
    assert len(ratio) == 3 and ratio[0] > ratio[1] > ratio[2] > 0
    qml = (tmp_path / "pca_half.qml").read_text()
    assert 'type="multibandcolor"' in qml and 'redBand="1"' in qml


def test_nodata_pixels_make_their_tokens_and_everything_downstream_nodata(tmp_path):
    with rasterio.open(S2) as src:
        data, profile = src.read(), src.profile
    data[:, 40:50, 100:110] = -1  # inside token (2, 6) and (3, 6)
    profile.update(nodata=-1)
    holed = tmp_path / "holed.tif"
    with rasterio.open(holed, "w", **profile) as dst:
        dst.write(data)
    run_task(embed_job(tmp_path, inputs={"S2L2A": {"path": str(holed)}}))
    emb, profile, _ = read(tmp_path / "emb.tif")
    invalid = (emb == profile["nodata"]).all(axis=0)
    assert np.argwhere(invalid).tolist() == [[2, 6], [3, 6]]
    run_task(derived_job("cluster", str(tmp_path / "emb.tif"), {"clusters": str(tmp_path / "cl.tif")}, k=3))
    clusters, cprof, _ = read(tmp_path / "cl.tif")
    assert ((clusters[0] == cprof["nodata"]) == invalid).all()


def test_overlap_must_be_whole_patches(tmp_path):
    with refused(r"tiling.overlap: must be a multiple of 16 for embeddings"):
        validate(embed_job(tmp_path, tiling={"tile_size": 128, "overlap": 24, "batch_size": 1}))


def test_embed_refuses_bad_configurations(tmp_path):
    with refused(r"params.merge: must be one of mean, max, concat"):
        validate(embed_job(tmp_path, merge="dict"))
    with refused(r"params.layers: model 'test_terramind_tiny' has 2 encoder layers \(1-2\), got 5"):
        validate(embed_job(tmp_path, layers=[5]))
    with refused(r"params.bands: S2L2A has no band 'B99'"):
        validate(embed_job(tmp_path, bands={"S2L2A": ["B02", "B99"]}))
    with refused(r"params.tim: band subsets cannot be combined with TiM"):
        validate(embed_job(tmp_path, bands={"S2L2A": ["B02"]}, tim=["LULC"]))


# ----------------------------------------------------------------------------- similarity
def test_similarity_is_the_cosine_to_the_references(tmp_path, embeddings):
    emb, _, _ = read(embeddings)
    x = unit(emb.reshape(64, -1).T)  # (196, D)
    refs = [point(40, 40), square(150, 100, 40)]  # token (2, 2); tokens 6..8 x 9..11 by their centres
    r1 = unit(x[2 * 14 + 2])
    r2 = unit(unit(x.reshape(14, 14, 64)[6:9, 9:12].reshape(-1, 64)).mean(axis=0))
    for aggregate, expected in (("max", np.maximum(x @ r1, x @ r2)), ("mean", x @ unit((r1 + r2) / 2))):
        out = tmp_path / f"sim_{aggregate}.tif"
        result = run_task(derived_job("similarity", embeddings, {"similarity": str(out)},
                                      references=features(*refs), aggregate=aggregate))  # fmt: skip
        sim, profile, tags = read(out)
        np.testing.assert_allclose(sim[0].ravel(), expected, atol=1e-5)
        assert result["metrics"]["reference_pixels"] == {"1": 1, "2": 9}
        assert profile["transform"] == rasterio.open(embeddings).transform
        assert tags["TERRAMIND_UNTRAINED"] == "YES" and "TERRAMIND_EMBEDDING_SOURCE" in tags
    assert sim.max() <= 1.0 + 1e-6 and 'type="singlebandpseudocolor"' in (tmp_path / "sim_mean.qml").read_text()


def test_similarity_from_the_inputs_directly_equals_the_two_steps(tmp_path, embeddings):
    job = embed_job(tmp_path)
    job.update(task="similarity", outputs={"similarity": str(tmp_path / "direct.tif")},
               params={"references": features(point(40, 40)), "aggregate": "max"})
    progress = RecordingProgress()
    run_task(job, progress)
    run_task(derived_job("similarity", embeddings, {"similarity": str(tmp_path / "two.tif")},
                         references=features(point(40, 40)), aggregate="max"))  # fmt: skip
    np.testing.assert_array_equal(read(tmp_path / "direct.tif")[0], read(tmp_path / "two.tif")[0])
    assert files(tmp_path) == {"direct.tif", "direct.qml", "two.tif", "two.qml"}  # no scratch embeddings left
    assert progress.percents == sorted(progress.percents)


def test_references_in_another_crs_are_transformed_onto_the_grid(tmp_path, embeddings):
    from rasterio.warp import transform

    x, y = transform(CRS, "EPSG:4326", [T.c + 405.0], [T.f - 395.0])  # pixel (40.5, 39.5): token (2, 2)
    geographic = {"crs": "EPSG:4326", "features": [{"id": 9, "geometry": {"type": "Point", "coordinates": [x[0], y[0]]}}]}
    out = [tmp_path / "wgs84.tif", tmp_path / "utm.tif"]
    for path, refs in zip(out, (geographic, features(point(40.5, 39.5)))):
        run_task(derived_job("similarity", embeddings, {"similarity": str(path)}, references=refs))
    np.testing.assert_array_equal(read(out[0])[0], read(out[1])[0])


def test_references_outside_the_raster_are_refused_by_id(tmp_path, embeddings):
    job = derived_job("similarity", embeddings, {"similarity": str(tmp_path / "sim.tif")},
                      references=features(point(40, 40), point(-500, 40), point(40, 9000)))  # fmt: skip
    with refused(r"params.references: 2 features \(2, 3\) of 3 lie outside the embedding raster layer 'emb'"):
        run_task(job)
    assert not (tmp_path / "sim.tif").exists()


def test_a_raster_without_the_tag_is_not_embeddings(tmp_path):
    job = derived_job("similarity", S2, {"similarity": str(tmp_path / "s.tif")}, references=features(point(1, 1)))
    with refused(r"inputs.EMBEDDINGS: layer 'emb' is not a TerraMind embedding raster \(it has no TERRAMIND_EMBEDDING"):
        validate(job)


# ----------------------------------------------------------------------------- cluster
def test_the_same_seed_gives_the_same_clusters(tmp_path, embeddings):
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out, csv = tmp_path / f"{name}.tif", tmp_path / f"{name}.csv"
        result = run_task(derived_job("cluster", embeddings, {"clusters": str(out), "centres": str(csv)}, k=4, seed=seed,
                                      sample_size=150))  # fmt: skip
        runs.append((read(out)[0], csv.read_text(), result["metrics"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1] and runs[0][2]["sample"] == 150
    emb, _, _ = read(embeddings)
    rows = [line.split(",") for line in runs[0][1].splitlines()[1:]]
    centres = np.array([[float(v) for v in r[2:]] for r in rows])  # (4, 64), unit-length space
    x = unit(emb.reshape(64, -1).T)
    nearest = ((x[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
    np.testing.assert_array_equal(runs[0][0][0].ravel(), nearest)  # every pixel has its nearest centre
    pixels = [int(r[1]) for r in rows]
    assert pixels == sorted(pixels, reverse=True) and sum(pixels) == 196  # largest first
    assert [c["name"] for c in runs[0][2]["classes"]] == [f"cluster {i}" for i in range(4)]


def test_more_clusters_than_pixels_is_refused(tmp_path, embeddings):
    job = derived_job("cluster", embeddings, {"clusters": str(tmp_path / "c.tif")}, k=200, sample_size=1000)
    with refused(r"params.k: is 200, but the embeddings have only 196 valid pixel"):
        run_task(job)
    assert files(tmp_path) == set()


# ----------------------------------------------------------------------------- classify
LABELS = [(20, 20), (60, 30), (100, 180), (200, 200), (30, 150), (180, 40), (120, 120), (150, 60), (80, 200), (210, 90)]


def labelled(classes) -> dict:
    return features(*(point(x, y) for x, y in LABELS), classes=classes)


def test_train_cross_validate_save_and_apply(tmp_path, embeddings):
    classes = ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"]
    out = {"classes": str(tmp_path / "cls.tif"), "probabilities": str(tmp_path / "p.tif"),
           "classifier": str(tmp_path / "clf.json")}  # fmt: skip
    result = run_task(derived_job("classify", embeddings, out, labels=labelled(classes), folds=5, seed=1))
    m = result["metrics"]
    assert np.asarray(m["confusion_matrix"]).sum() == 10 and 0 <= m["cv_accuracy"] <= 1
    assert m["folds"] == 5 and len(m["cv_fold_accuracy"]) == 5 and m["features_per_class"] == {"a": 5, "b": 5}
    cls, profile, _ = read(out["classes"])
    prob, _, _ = read(out["probabilities"])
    np.testing.assert_array_equal(cls[0], prob.argmax(axis=0))  # values 0 ('a') and 1 ('b')
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)
    saved = json.loads(Path(out["classifier"]).read_text())
    assert saved["format"] == "terramind-fewshot-classifier" and [c[1] for c in saved["classes"]] == ["a", "b"]
    again = tmp_path / "again.tif"
    applied = run_task(derived_job("classify", embeddings, {"classes": str(again)}, classifier=out["classifier"]))
    np.testing.assert_array_equal(read(again)[0], cls)
    assert applied["metrics"]["trained"] is False


def test_integer_class_codes_are_kept_and_upsampling_lands_on_the_input_grid(tmp_path, embeddings):
    classes = [3, 7, 3, 7, 3, 7, 3, 7, 3, 7]
    out = tmp_path / "up.tif"
    run_task(derived_job("classify", embeddings, {"classes": str(out)}, labels=labelled(classes), folds=2, upsample=True))
    up, profile, _ = read(out)
    with rasterio.open(S2) as src:
        assert (profile["width"], profile["height"], profile["transform"]) == (src.width, src.height, src.transform)
    small = tmp_path / "small.tif"
    run_task(derived_job("classify", embeddings, {"classes": str(small)}, labels=labelled(classes), folds=2))
    tokens = read(small)[0][0]
    assert set(np.unique(tokens)) <= {3, 7}
    np.testing.assert_array_equal(up[0], np.repeat(np.repeat(tokens, 16, 0), 16, 1))


def test_one_class_is_refused(tmp_path, embeddings):
    job = derived_job("classify", embeddings, {"classes": str(tmp_path / "c.tif")}, labels=labelled(["water"] * 10))
    with refused(r"params.labels.class: has one class \('water'\) among the 10 labelled features"):
        validate(job)


def test_fewer_labelled_features_than_folds_is_refused(tmp_path, embeddings):
    job = derived_job("classify", embeddings, {"classes": str(tmp_path / "c.tif")},
                      labels=features(point(20, 20), point(200, 200), point(100, 50), classes=["a", "b", "a"]), folds=5)
    with refused(r"params.folds: is 5, but there are only 3 labelled features"):
        validate(job)


def test_a_classifier_refuses_embeddings_made_another_way(tmp_path, embeddings):
    clf = tmp_path / "clf.json"
    run_task(derived_job("classify", embeddings, {"classes": str(tmp_path / "c.tif"), "classifier": str(clf)},
                         labels=labelled(["a", "b"] * 5), folds=2))  # fmt: skip
    run_task(embed_job(tmp_path, "max.tif", merge="max", layers=[1]))
    job = derived_job("classify", str(tmp_path / "max.tif"), {"classes": str(tmp_path / "x.tif")}, classifier=str(clf))
    with refused(r"inputs.EMBEDDINGS: the embedding raster layer 'emb' comes from another model or configuration than the "
                 r"classifier 'clf.json' \(merge: 'mean' vs 'max'; layers: 2 vs 1\)"):
        validate(job)


def test_cancel_leaves_nothing(tmp_path, embeddings):
    out = {"classes": str(tmp_path / "c.tif"), "classifier": str(tmp_path / "c.json")}
    with pytest.raises(CancelledError):
        run_task(derived_job("classify", embeddings, out, labels=labelled(["a", "b"] * 5), folds=2),
                 RecordingProgress.cancelling_after(percents=1))  # fmt: skip
    assert files(tmp_path) == set()


def test_worker_reports_a_bad_labelled_set_in_one_line(tmp_path, embeddings):
    job = derived_job("classify", embeddings, {"classes": str(tmp_path / "c.tif")}, labels=labelled(["x"] * 10))
    code, events, stderr = run_worker(write_job(tmp_path, job))
    assert code == 2 and events[-1]["event"] == "error" and events[-1]["field"] == "params.labels.class"
    assert stderr.strip().count("\n") == 0 and "Traceback" not in stderr
    assert files(tmp_path) == {"job.json"}


def test_tim_embeddings_are_seeded_and_concat_counts_the_tim_modality(tmp_path):
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_task(embed_job(tmp_path, f"{name}.tif", merge="concat", tim=["LULC"], seed=seed,
                           tiling={"tile_size": 224, "overlap": 32, "batch_size": 1}))  # fmt: skip
        runs[name] = read(tmp_path / f"{name}.tif")
    assert runs["a"][0].shape == (128, 14, 14)  # 64 for S2L2A + 64 for the generated LULC tokens
    np.testing.assert_array_equal(runs["a"][0], runs["b"][0])
    assert not np.array_equal(runs["a"][0][64:], runs["c"][0][64:])  # other seed: other LULC tokens
    assert json.loads(runs["a"][2][TAG])["tim"] == ["LULC"]
