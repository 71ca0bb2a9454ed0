"""A fitted HistGradientBoosting model evaluated without scikit-learn's per-call overhead,
with the same digits.

scikit-learn's ``predict`` on a one-row DataFrame costs about 20 ms here: the column
transformer that encodes the categorical feature (pandas indexing, validation) takes
two thirds of it, and a Python-level call per tree (300 trees) the rest, whatever the
number of rows. The service forecasts a handful of rows per call, so this module

- encodes the features itself: the categorical columns first (the fitted
  ``OrdinalEncoder``'s codes), then the numeric ones, as the fitted column transformer
  orders them;
- walks every tree for every row at once in a few numpy steps per tree level (small
  batches), or calls scikit-learn's own compiled per-tree predictors on the encoded
  matrix (large batches);
- adds the leaf values to the baseline one tree after another, in tree order, as
  scikit-learn does, so every sum is rounded the same way.

The segment column may first pass through the model's ``SegmentEncoder`` step: ``native``
(unchanged), ``target_mean`` (each level's value, computed at load by the encoder's own
``encode``) or ``none`` (the column dropped).

The result equals ``model.predict`` to the last bit; :class:`CompiledModel` refuses any
model whose structure it does not know (``from_model`` returns ``None``) and the
forecaster checks the equality again on every segment when it loads a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Above this many rows scikit-learn's compiled per-tree loop is faster than numpy.
NUMPY_MAX_ROWS = 48


class NotCompilable(Exception):
    """The model is not a structure this module reproduces exactly."""


class CompiledTrees:
    """The trees of one fitted ``HistGradientBoostingRegressor``, flattened."""

    def __init__(self, est: Any):
        if getattr(est, "n_trees_per_iteration_", None) != 1:
            raise NotCompilable("only single-output regression is compiled")
        predictors = [it[0] for it in est._predictors]
        known, f_idx_map = est._bin_mapper.make_known_categories_bitsets()
        feat, thr, mgl, left, right, leaf, value, depth = [], [], [], [], [], [], [], []
        tables: list[np.ndarray] = []
        catid_parts = []
        roots, offset = [], 0
        codes = np.arange(256, dtype=np.uint32)
        word, bit = codes >> 5, codes & 31
        for tree in predictors:
            nodes = tree.nodes
            n = len(nodes)
            roots.append(offset)
            is_leaf = nodes["is_leaf"].astype(bool)
            lft = nodes["left"].astype(np.intp) + offset
            rgt = nodes["right"].astype(np.intp) + offset
            own = np.arange(offset, offset + n, dtype=np.intp)
            lft[is_leaf] = own[is_leaf]  # a leaf points to itself: extra steps stay there
            rgt[is_leaf] = own[is_leaf]
            feat.append(nodes["feature_idx"].astype(np.intp))
            thr.append(nodes["num_threshold"].astype(np.float64))
            mgl.append(nodes["missing_go_to_left"].astype(bool))
            left.append(lft)
            right.append(rgt)
            leaf.append(is_leaf)
            value.append(nodes["value"].astype(np.float64))
            depth.append(int(nodes["depth"].max()))
            cid = np.full(n, -1, dtype=np.intp)
            for i in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~is_leaf):
                raw = tree.raw_left_cat_bitsets[nodes["bitset_idx"][i]]
                kn = known[f_idx_map[nodes["feature_idx"][i]]]
                in_left = ((raw[word] >> bit) & 1).astype(bool)
                is_known = ((kn[word] >> bit) & 1).astype(bool)
                # left if in the left bitset; right if another known category; an unknown
                # category goes where missing values go (scikit-learn's _predictor.pyx)
                go_left = np.where(in_left, True, np.where(is_known, False, mgl[-1][i]))
                cid[i] = len(tables)
                tables.append(go_left)
            catid_parts.append(cid)
            offset += n
        self.feat = np.concatenate(feat)
        self.thr = np.concatenate(thr)
        self.mgl = np.concatenate(mgl)
        self.left = np.concatenate(left)
        self.right = np.concatenate(right)
        self.value = np.concatenate(value)
        self.catid = np.concatenate(catid_parts)
        self.table = np.array(tables, dtype=bool) if tables else np.zeros((0, 256), bool)
        self.has_cat = bool(tables)
        self.roots = np.asarray(roots, dtype=np.intp)
        self.depth = max(depth) if depth else 0
        base = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
        if base.size != 1:
            raise NotCompilable("a single baseline value is expected")
        self.base = float(np.zeros(1)[0] + base[0])  # zeros + baseline, as scikit-learn
        self.predictors = predictors
        self.known = known
        self.f_idx_map = f_idx_map

    def raw_predict(self, X: np.ndarray) -> np.ndarray:
        """Sum of the baseline and every tree's leaf value, tree by tree (``X`` encoded)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        n = X.shape[0]
        if n == 0:
            return np.zeros(0)
        if n > NUMPY_MAX_ROWS:
            out = np.full(n, self.base)
            for tree in self.predictors:
                out += tree.predict(X, self.known, self.f_idx_map, 1)
            return out
        width = X.shape[1]
        idx = np.tile(self.roots, (n, 1))
        rowbase = (np.arange(n, dtype=np.intp) * width)[:, None]
        flat = X.ravel()
        for _ in range(self.depth):
            x = flat[rowbase + self.feat[idx]]
            go = x <= self.thr[idx]
            nan = np.isnan(x)
            if nan.any():
                go[nan] = self.mgl[idx[nan]]
            if self.has_cat:
                cid = self.catid[idx]
                cat = (cid >= 0) & ~nan
                if cat.any():
                    code = x[cat]
                    neg = code < 0
                    pick = self.table[cid[cat], np.clip(code, 0, 255).astype(np.intp)]
                    if neg.any():  # below zero: treated as missing (scikit-learn)
                        pick[neg] = self.mgl[idx[cat][neg]]
                    go[cat] = pick
            idx = np.where(go, self.left[idx], self.right[idx])
        terms = np.empty((n, len(self.roots) + 1))
        terms[:, 0] = self.base
        terms[:, 1:] = self.value[idx]
        # accumulate is sequential: the same additions in the same order as scikit-learn
        return np.add.accumulate(terms, axis=1)[:, -1]


class CompiledModel:
    """``LevelRatioRegressor(Pipeline([("segment", SegmentEncoder)?, ("estimator",
    HistGradientBoostingRegressor)]))`` (or the bare regressor) as numpy steps over a float
    matrix of its features.

    ``predict(X, codes)`` takes the features in the model's column order as float64, with
    each categorical feature given as the index of its value in ``categories[name]`` (the
    levels the feature table used), and returns what ``model.predict`` returns for the
    same rows as a DataFrame.
    """

    def __init__(self, model: Any, features: list[str], categories: dict[str, list[str]]):
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.pipeline import Pipeline

        from ..modelling.model import LevelRatioRegressor

        self.level_index: int | None = None
        self.scale = "none"
        #: the segment encoder's work: (column, value of each level then of a missing one),
        #: or (column, None) when it drops the column; None when it passes it through
        self.segment_step: tuple[int, np.ndarray | None] | None = None
        inner = model
        if isinstance(model, LevelRatioRegressor):
            self.scale = model.scale
            if model.scale not in ("log_ratio", "none"):
                raise NotCompilable(f"scale {model.scale!r}")
            if list(model.feature_names_in_) != list(features):
                raise NotCompilable("the model's features differ from the metadata's")
            self.level_index = list(features).index(model.level_feature)
            inner = model.regressor_
        if isinstance(inner, Pipeline):
            *steps, (_, inner) = inner.steps
            if len(steps) > 1:
                raise NotCompilable("a pipeline with several preprocessing steps")
            for _, step in steps:
                features = self._segment_encoder(step, list(features), categories)
        if type(inner) is not HistGradientBoostingRegressor:
            raise NotCompilable(f"estimator {type(inner).__name__}")
        self.est = inner
        self.trees = CompiledTrees(inner)
        self.link = inner._loss.link
        pre = inner._preprocessor
        n = len(features)
        if pre is None:
            self.order = np.arange(n)
            self.cat_maps: list[tuple[int, np.ndarray]] = []
        else:
            mask = np.asarray(inner.is_categorical_, dtype=bool)
            if mask.shape != (n,):
                raise NotCompilable("categorical mask of another width")
            names = [t[0] for t in pre.transformers_ if t[0] != "remainder" or len(t[2])]
            enc = pre.named_transformers_.get("encoder")
            out = pre.output_indices_
            if names[:2] != ["encoder", "numerical"] or enc is None:
                raise NotCompilable("an unexpected column transformer")
            cat_cols, num_cols = np.flatnonzero(mask), np.flatnonzero(~mask)
            if (out["encoder"].start, out["encoder"].stop) != (0, len(cat_cols)):
                raise NotCompilable("categorical outputs not first")
            self.order = np.concatenate([cat_cols, num_cols])
            self.cat_maps = []
            for j, col in enumerate(cat_cols):
                levels = categories.get(features[col])
                if levels is None:
                    raise NotCompilable(f"no levels for categorical feature {features[col]!r}")
                known = {str(v): float(i) for i, v in enumerate(enc.categories_[j])}
                # index into the feature table's levels -> the encoder's code (NaN: unknown)
                code = np.array([known.get(str(v), np.nan) for v in levels], dtype=np.float64)
                self.cat_maps.append((int(col), code))

    def _segment_encoder(
        self, step: Any, features: list[str], categories: dict[str, list[str]]
    ) -> list[str]:
        """Reproduce a fitted ``SegmentEncoder`` step; returns the features after it."""
        import pandas as pd

        from ..modelling.model import SegmentEncoder

        if type(step) is not SegmentEncoder:
            raise NotCompilable(f"a preprocessing step {type(step).__name__}")
        if list(step.feature_names_in_) != features:
            raise NotCompilable("the segment encoder's features differ from the model's")
        if step.encoding_ == "native" or step.column not in features:
            return features
        col = features.index(step.column)
        if step.encoding_ == "none":
            self.segment_step = (col, None)
            return features[:col] + features[col + 1 :]
        if step.encoding_ != "target_mean":
            raise NotCompilable(f"segment encoding {step.encoding_!r}")
        levels = categories.get(step.column)
        if levels is None:
            raise NotCompilable(f"no levels for the segment column {step.column!r}")
        # the encoder's own values, level by level (the same floats as in model.predict)
        values = step.encode(pd.Series(pd.Categorical(levels, categories=levels)))
        values = np.append(np.asarray(values, dtype=np.float64), float(step.global_mean_))
        self.segment_step = (col, values)
        return features

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The features as the estimator sees them (after the segment encoder)."""
        if self.segment_step is None:
            return X
        col, values = self.segment_step
        if values is None:
            return np.delete(X, col, axis=1)
        out = np.array(X, dtype=np.float64, copy=True)
        code = X[:, col]
        missing = np.isnan(code) | (code < 0) | (code >= len(values) - 1)
        out[:, col] = values[np.where(missing, len(values) - 1, code).astype(np.intp)]
        return out

    @classmethod
    def from_model(
        cls, model: Any, features: list[str], categories: dict[str, list[str]]
    ) -> CompiledModel | None:
        """The compiled model, or ``None`` for a model of another structure."""
        try:
            return cls(model, features, categories)
        except (NotCompilable, AttributeError, KeyError, ValueError, TypeError):
            return None

    def encode(self, X: np.ndarray) -> np.ndarray:
        """The matrix the fitted column transformer would produce."""
        enc = X[:, self.order]
        for j, (col, code) in enumerate(self.cat_maps):
            raw = X[:, col]
            ok = ~np.isnan(raw)
            values = np.full(len(raw), np.nan)
            values[ok] = code[raw[ok].astype(np.intp)]
            enc[:, j] = values
        return enc

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Forecasts on the original scale, as ``model.predict`` gives them."""
        z = self.link.inverse(self.trees.raw_predict(self.encode(self.transform(X))))
        if self.level_index is None:
            return z
        level = X[:, self.level_index]
        pred = np.expm1(z + level) if self.scale == "log_ratio" else z
        return np.clip(pred, 0, None)
