"""models/learning: k-means, the softmax classifier, the folds, PCA, the classifier file — on data whose
answer is known (separated blobs, a linear rule), so each part can fail on its own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from terramind_qgis.models.core.modalities import ClassInfo
from terramind_qgis.models.learning import classifier_file, unit_rows
from terramind_qgis.models.learning.folds import cross_validate, feature_folds
from terramind_qgis.models.learning.kmeans import assign, fit_kmeans
from terramind_qgis.models.learning.pca import Covariance
from terramind_qgis.models.learning.softmax import balanced_weights, fit_softmax
from testlib.errors import refused


def blobs(rng, centres, n=60, spread=0.05):
    x = np.concatenate([c + spread * rng.standard_normal((n, len(c))) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(len(centres)), n)


def test_kmeans_finds_separated_blobs_and_is_reproducible():
    rng = np.random.default_rng(0)
    sizes = [70, 40, 25, 10]
    x = np.concatenate([3 * np.eye(16)[c] + 0.05 * rng.standard_normal((n, 16)) for c, n in enumerate(sizes)])
    truth = np.repeat(np.arange(4), sizes)
    a = fit_kmeans(x, 4, np.random.default_rng(1))
    b = fit_kmeans(x, 4, np.random.default_rng(1))
    np.testing.assert_array_equal(a.centres, b.centres)
    assert a.converged and list(a.counts) == sizes  # largest first
    found = assign(x, a.centres)
    np.testing.assert_array_equal(found, truth)  # blob c is cluster c (numbered by size)


def test_softmax_learns_a_linear_rule_and_balances_classes():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 32)).astype(np.float32)
    y = (x[:, 3] - x[:, 7] > 0.4).astype(int)  # unbalanced: about 40 % ones
    groups = np.arange(400)
    model = fit_softmax(x[:300], y[:300], 2, groups[:300], 0.01)
    accuracy = (model.probabilities(x[300:]).argmax(axis=1) == y[300:]).mean()
    assert accuracy > 0.9
    w = balanced_weights(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 2, 3]))
    np.testing.assert_allclose(w, [0.125, 0.125, 0.25, 0.25, 0.25])  # classes halves; features equal within


def test_folds_keep_a_feature_together_and_stratify():
    rng = np.random.default_rng(3)
    feature_class = np.array([0] * 6 + [1] * 4)
    fold = feature_folds(feature_class, 3, rng)
    for c in (0, 1):  # every class in as many folds as it can fill
        assert len(set(fold[feature_class == c])) == min(3, (feature_class == c).sum())
    x, y = blobs(rng, [3 * np.eye(8)[0], 3 * np.eye(8)[1]], n=50)
    groups = np.repeat(np.arange(10), 10)  # 10 features of 10 samples
    cv = cross_validate(x, y, groups, feature_folds(np.repeat([0, 1], 5), 5, rng), 2, 0.01)
    assert cv.confusion.sum() == 100 and cv.accuracy == 1.0 and cv.folds == 5


def test_pca_components_are_the_principal_axes():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2000, 6)) * np.array([5.0, 3.0, 2.0, 0.5, 0.4, 0.3])
    cov = Covariance(6)
    for part in np.array_split(x, 7):
        cov.add(part)
    mean, comps, ratio = cov.components(3)
    np.testing.assert_allclose(np.abs(comps), np.eye(6)[:3], atol=0.1)
    assert (comps[np.arange(3), np.abs(comps).argmax(axis=1)] > 0).all()  # sign fixed
    assert ratio[0] > ratio[1] > ratio[2]


def test_classifier_file_round_trip_and_damage(tmp_path):
    rng = np.random.default_rng(5)
    x = unit_rows(rng.standard_normal((20, 4)).astype(np.float32))
    model = fit_softmax(x, np.repeat([0, 1], 10), 2, np.arange(20), 0.1)
    saved = classifier_file.SavedClassifier(model, (ClassInfo(0, "a", "#000000"), ClassInfo(5, "b", "#FFFFFF")),
                                            {"dim": 4, "model_id": "m"}, {"features": 20})  # fmt: skip
    path = str(tmp_path / "c.json")
    classifier_file.save(path, saved, 0.1, "test")
    back = classifier_file.load(path)
    np.testing.assert_allclose(back.model.probabilities(x), model.probabilities(x), rtol=1e-6)
    assert [c.value for c in back.classes] == [0, 5]
    doc = json.loads(open(path).read())
    doc["weights"] = doc["weights"][:1]
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with refused(r"params.classifier: 'bad.json' is damaged \(weights \(1, 4\) for 2 classes"):
        classifier_file.load(str(tmp_path / "bad.json"))
    (tmp_path / "other.json").write_text("{}")
    with refused(r"'other.json' is not a few-shot classifier saved by this plugin"):
        classifier_file.load(str(tmp_path / "other.json"))


@pytest.mark.parametrize("k", [2, 9])
def test_kmeans_needs_as_many_points_as_clusters(k):
    x = np.zeros((k - 1, 3), np.float32)
    with pytest.raises(ValueError, match="cannot form"):
        fit_kmeans(x, k, np.random.default_rng(0))
