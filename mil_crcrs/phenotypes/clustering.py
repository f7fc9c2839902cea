"""Tile phenotypes: clusters of encoder features fitted on a sample of a cohort's tiles.

:func:`fit_phenotypes` reduces a tile sample (n, D) with PCA (scikit-learn) and clusters it:

- ``"kmeans"`` (default): scikit-learn's :class:`~sklearn.cluster.KMeans` with K given, or chosen
  over ``k_range`` by the silhouette score of the sample (scikit-learn's
  :func:`~sklearn.metrics.silhouette_score` on at most 5,000 tiles);
- ``"leiden"``: the Leiden algorithm (leidenalg) over the k-nearest-neighbour graph of the sample
  (scikit-learn's :func:`~sklearn.neighbors.kneighbors_graph`), as histomorphological phenotype
  learning does; the resolution sets how many phenotypes come out.

Phenotypes are numbered 1..K by their share of the sample (1 = most common; ties by the lower
cluster id), so the same seed always gives the same ids. A :class:`PhenotypeModel` assigns any
tile to its nearest phenotype centre in the PCA space (for k-means that is exactly
``KMeans.predict``), and is saved as ``phenotypes.npz`` (arrays, read without pickle) and
``phenotypes.json`` (what it was fitted on), so a validation cohort's tiles get the training
cohort's phenotypes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mil_crcrs.atomic import atomic_path, write_json
from mil_crcrs.errors import InputError, SettingError

METHODS = ("kmeans", "leiden")
ARRAYS_NAME = "phenotypes.npz"
MODEL_NAME = "phenotypes.json"
SILHOUETTE_TILES = 5000
ASSIGN_CHUNK = 65536


@dataclass(frozen=True)
class ClusterSettings:
    """How tiles are clustered into phenotypes.

    Parameters
    ----------
    method : "kmeans" or "leiden"
    k : number of phenotypes (k-means); None = chosen over ``k_range`` by silhouette
    k_range : (min, max) K tried when ``k`` is None; at most 8 by default, an atlas a
        pathologist can read (the silhouette kept rising slowly to K = 10 on the demo, where
        the planted tissue split in two)
    resolution : Leiden's resolution (higher = more phenotypes)
    neighbours : neighbours per tile of Leiden's kNN graph
    pca_dims : PCA components the tiles are clustered in (at most the feature dim)
    l2 : scale each tile's features to unit length first (cosine geometry, as is usual for
        encoder embeddings); on the demo cohort it kept the planted tissue in one phenotype
        over a wider range of K
    seed : seeds PCA, k-means, the silhouette sample and Leiden
    """

    method: str = "kmeans"
    k: int | None = None
    k_range: tuple[int, int] = (3, 8)
    resolution: float = 0.5
    neighbours: int = 15
    pca_dims: int = 50
    l2: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SettingError(
                "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if self.k is not None and self.k < 2:
            raise SettingError("k", f"must be at least 2, got {self.k}")
        if self.k is not None and self.method == "leiden":
            raise SettingError("k", "goes with k-means; Leiden's resolution sets its phenotypes")
        lo, hi = self.k_range
        if not 2 <= lo <= hi:
            raise SettingError("k_range", f"must be (min, max) with 2 <= min <= max, got {lo, hi}")
        if self.pca_dims < 1 or self.neighbours < 2 or self.resolution <= 0:
            raise SettingError("pca_dims", "pca_dims >= 1, neighbours >= 2, resolution > 0")


@dataclass(frozen=True)
class PhenotypeModel:
    """Fitted phenotypes: the PCA and each phenotype's centre in it.

    Attributes
    ----------
    mean : (D,) float64 feature mean of the sample (PCA centre)
    components : (p, D) float64 PCA axes
    centres : (K, p) float64 phenotype centres in PCA space; row i is phenotype i + 1
    encoder : the encoder of the features it was fitted on (None if they do not say)
    l2 : features are scaled to unit length before the PCA
    info : how it was fitted (settings, sample size, K chosen and the silhouette per K)
    """

    mean: np.ndarray
    components: np.ndarray
    centres: np.ndarray
    encoder: str | None
    l2: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.centres.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    def embed(self, features: np.ndarray) -> np.ndarray:
        """(n, p) float32 PCA coordinates of features (n, D)."""
        x = _normalised(features, self.l2) - self.mean.astype(np.float32)
        return x @ self.components.T.astype(np.float32)

    def assign(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each tile's phenotype and its distance to that phenotype's centre.

        Parameters
        ----------
        features : (n, D) float features of the encoder the phenotypes were fitted on

        Returns
        -------
        phenotype : (n,) int64 in 1..K
        distance : (n,) float32 Euclidean distance to its centre in PCA space
        """
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise InputError(
                f"features of shape {features.shape} for phenotypes fitted on dim {self.feature_dim}"
            )
        centres = self.centres.astype(np.float32)
        c2 = (centres**2).sum(axis=1)
        labels = np.empty(features.shape[0], dtype=np.int64)
        dist = np.empty(features.shape[0], dtype=np.float32)
        for start in range(0, features.shape[0], ASSIGN_CHUNK):
            z = self.embed(features[start : start + ASSIGN_CHUNK])
            d2 = (z**2).sum(axis=1, keepdims=True) - 2.0 * z @ centres.T + c2
            best = np.argmin(d2, axis=1)
            labels[start : start + z.shape[0]] = best + 1
            dist[start : start + z.shape[0]] = np.sqrt(
                np.maximum(d2[np.arange(len(best)), best], 0)
            )
        return labels, dist

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``phenotypes.npz`` and ``phenotypes.json`` into ``directory`` (atomically)."""
        directory = Path(directory)
        with atomic_path(directory / ARRAYS_NAME, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, mean=self.mean, components=self.components, centres=self.centres)
        write_json(
            directory / MODEL_NAME,
            {"encoder": self.encoder, "k": self.k, "l2": self.l2, **self.info},
        )


def load_phenotypes(directory: str | os.PathLike) -> PhenotypeModel:
    """Read phenotypes saved by :meth:`PhenotypeModel.save` (no pickle is ever loaded).

    Raises
    ------
    InputError
        naming the file that is missing or does not hold fitted phenotypes.
    """
    directory = Path(directory)
    arrays_path, model_path = directory / ARRAYS_NAME, directory / MODEL_NAME
    for path in (arrays_path, model_path):
        if not path.is_file():
            raise InputError(f"{path}: no such file; give the folder of an earlier phenotypes run")
    try:
        with np.load(arrays_path, allow_pickle=False) as data:
            mean, components, centres = (
                np.asarray(data[n], dtype=np.float64) for n in ("mean", "components", "centres")
            )
        info = json.loads(model_path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(f"{directory}: not fitted phenotypes ({exc})") from None
    if components.shape[1:] != mean.shape or centres.shape[1:] != components.shape[:1]:
        raise InputError(f"{arrays_path}: arrays of inconsistent shapes")
    encoder, l2 = info.pop("encoder", None), bool(info.pop("l2", False))
    info.pop("k", None)
    return PhenotypeModel(mean, components, centres, encoder, l2, info)


def _normalised(features: np.ndarray, l2: bool) -> np.ndarray:
    """(n, D) float32 features, each scaled to unit length when ``l2``."""
    x = np.asarray(features, dtype=np.float32)
    if not l2:
        return x
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.float32(1e-12))


def fit_phenotypes(
    sample: np.ndarray, settings: ClusterSettings, encoder: str | None = None
) -> PhenotypeModel:
    """Fit phenotypes on a tile sample.

    Parameters
    ----------
    sample : (n, D) float features of the sampled tiles
    settings : the method and its parameters
    encoder : the encoder that made the features, recorded with the phenotypes

    Returns
    -------
    PhenotypeModel

    Raises
    ------
    SettingError
        ``k`` larger than the sampled tiles.
    """
    from sklearn.decomposition import PCA

    sample = _normalised(sample, settings.l2)
    n, dim = sample.shape
    if settings.k is not None and settings.k > n:
        raise SettingError("k", f"is {settings.k} but only {n} tiles were sampled to cluster")
    if n < 3:
        raise InputError(f"only {n} tiles to cluster into phenotypes; need at least 3")
    pca = PCA(n_components=min(settings.pca_dims, n - 1, dim), random_state=settings.seed)
    z = pca.fit_transform(sample).astype(np.float32)
    info: dict[str, Any] = {"settings": _settings_record(settings), "n_sample": n}
    given_centres = None
    if settings.method == "leiden":
        labels = _leiden(z, settings)
    else:
        k, scores = settings.k, {}
        if k is None:
            k, scores = _choose_k(z, settings)
        kmeans = _kmeans(z, k, settings.seed)
        labels, given_centres = kmeans.labels_, kmeans.cluster_centers_
        info["k_chosen_by"] = "given" if settings.k is not None else "silhouette"
        info["silhouette"] = {str(kk): v for kk, v in scores.items()}
    centres, share = _ordered_centres(z, labels, given_centres)
    info["sample_share"] = share
    return PhenotypeModel(
        mean=pca.mean_.astype(np.float64),
        components=pca.components_.astype(np.float64),
        centres=centres,
        encoder=encoder,
        l2=settings.l2,
        info=info,
    )


def _settings_record(settings: ClusterSettings) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(settings)


def _kmeans(z: np.ndarray, k: int, seed: int) -> Any:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit(z)


def _choose_k(z: np.ndarray, settings: ClusterSettings) -> tuple[int, dict[int, float]]:
    """The K over ``k_range`` (capped at the sample size - 1) with the best silhouette score."""
    from sklearn.metrics import silhouette_score

    lo, hi = settings.k_range
    hi = min(hi, z.shape[0] - 1)
    if hi < lo:
        raise SettingError("k_range", f"starts at {lo} but only {z.shape[0]} tiles were sampled")
    scores = {}
    for k in range(lo, hi + 1):
        labels = _kmeans(z, k, settings.seed).labels_
        scores[k] = float(
            silhouette_score(
                z, labels, sample_size=min(SILHOUETTE_TILES, z.shape[0]), random_state=settings.seed
            )
        )
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


def _leiden(z: np.ndarray, settings: ClusterSettings) -> np.ndarray:
    """Leiden communities of the symmetrised kNN graph of ``z`` (n, p)."""
    from sklearn.neighbors import kneighbors_graph

    try:
        import igraph
        import leidenalg
    except ImportError:
        raise SettingError(
            "method", "leiden needs leidenalg and igraph: pip install 'mil-crcrs[phenotypes]'"
        ) from None

    graph = kneighbors_graph(z, min(settings.neighbours, z.shape[0] - 1), include_self=False)
    graph = graph.maximum(graph.T).tocoo()
    upper = graph.row < graph.col
    g = igraph.Graph(n=z.shape[0], edges=list(zip(graph.row[upper], graph.col[upper], strict=True)))
    partition = leidenalg.find_partition(
        g,
        leidenalg.RBConfigurationVertexPartition,
        resolution_parameter=settings.resolution,
        seed=settings.seed,
    )
    return np.asarray(partition.membership, dtype=np.int64)


def _ordered_centres(
    z: np.ndarray, labels: np.ndarray, centres: np.ndarray | None
) -> tuple[np.ndarray, list[float]]:
    """Cluster centres (K, p) ordered by cluster size (largest first), and their sample shares.

    ``centres`` (k-means') are indexed by label; None = the mean of each cluster's tiles."""
    ids, counts = np.unique(labels, return_counts=True)
    order = sorted(range(len(ids)), key=lambda i: (-counts[i], ids[i]))
    if centres is None:
        centres = np.stack([z[labels == i].mean(axis=0) for i in range(int(ids.max()) + 1)])
    centres = np.stack([centres[ids[i]] for i in order]).astype(np.float64)
    share = [float(counts[i] / labels.size) for i in order]
    return centres, share
