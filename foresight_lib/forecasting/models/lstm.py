"""A global LSTM: one network for every series, multi-horizon quantile outputs.

Each series is divided by its scale (the in-sample MAE of the one-day seasonal naive,
the MASE denominator), so the loss weighs series the way the leaderboard does and
one network fits series of any unit. From a cutoff ``t`` the network sees:

- a sequence over the last ``input_steps`` values: each value minus the last one, and
  each value minus the value one season (day) earlier;
- static features: the last value minus the median of the last day, the last value
  minus the value a day earlier, and for every target step ``t+k`` the change from
  ``t-d*m`` to ``t+k-d*m`` one day earlier and averaged over ``lookback_days`` days
  (what the same hour did on past days).

It predicts, for all ``horizon`` steps at once (direct strategy), quantiles of the
change from the last value, trained with the pinball loss: per step a softmax gate
mixes four anchors (no change, back to the day's median, the seasonal naive, the
average same-hour change) and a per-quantile correction is added. The network reads
asinh-squashed inputs, so spikes of a hundred times the scale neither blow up
training nor hide how far back a forecast must go. The median is the point forecast
(MASE is an absolute error). The interval bounds are conformalised on a validation
split (the last day of each series' training data), which also drives early
stopping; the best weights are kept in memory and restored at the end.
Longer forecasts than ``horizon`` are made block by block, feeding medians back.

The interface gives a global model no timestamps, so there are no clock features;
the day-earlier values carry the daily cycle.
"""
from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from foresight_lib.errors import ConfigError, SeriesTooShortError
from foresight_lib.forecasting.metrics import seasonal_naive_scale
from foresight_lib.forecasting.models.base import Forecast, GlobalForecaster, empty_forecast, known_context, z_value
from foresight_lib.frames import LEVELS

log = logging.getLogger(__name__)

SCALE_DAYS = 8
PREDICT_WINDOWS = 8192
"""Most windows in one forward pass when forecasting (the activations of one pass are held at once)."""
"""Days of history each series' scale is measured on (recent, but longer than a week)."""
N_SEQ = 2
N_ANCHORS = 4
"""Candidate changes from the last value: none, back to the day's median, the seasonal
naive, and the average same-hour change of past days."""
"""Per-step inputs of the recurrent part: value minus last value, value minus a day earlier."""


class _Net(nn.Module):
    """LSTM over the recent values and an MLP head over its state and the static features.

    The head weighs the anchors per step (softmax gate) and adds a correction per quantile,
    so a forecast can be as far from the last value as the anchors are, however large,
    while the network itself only reads compressed inputs.
    """

    def __init__(self, n_static: int, n_anchors: int, horizon: int, n_quantiles: int, hidden: int, head: int):
        super().__init__()
        self.shape = (horizon, n_anchors, n_quantiles)
        self.lstm = nn.LSTM(N_SEQ, hidden, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(hidden + n_static, head), nn.ReLU(), nn.Linear(head, horizon * (n_anchors + n_quantiles))
        )

    def forward(self, seq: torch.Tensor, static: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Quantiles (n, horizon, quantiles) of the change from the last value."""
        horizon, n_anchors, n_quantiles = self.shape
        _, (state, _) = self.lstm(seq)
        out = self.head(torch.cat([state[-1], static], dim=1)).view(-1, horizon, n_anchors + n_quantiles)
        gate = torch.softmax(out[..., :n_anchors], dim=-1)
        base = (gate * anchors).sum(dim=-1, keepdim=True)
        return base + out[..., n_anchors:]


def _quantiles(levels: Sequence[int]) -> np.ndarray:
    """Sorted quantiles: the median and both bounds of each central interval."""
    qs = {0.5}
    for level in levels:
        qs.add(round(0.5 - level / 200.0, 6))
        qs.add(round(0.5 + level / 200.0, 6))
    return np.array(sorted(qs))


class LSTM(GlobalForecaster):
    """One LSTM for all series; quantile forecasts of the next ``horizon`` steps."""

    alias = "lstm"
    min_seasons = 2.0

    def __init__(
        self, horizon: int = 12, input_steps: int = 24, lookback_days: int = 3, hidden_size: int = 48,
        head_size: int = 64, levels: Sequence[int] = LEVELS, max_epochs: int = 20, patience: int = 3,
        windows_per_epoch: int = 16384, batch_size: int = 512, learning_rate: float = 3e-3,
        val_days: float = 1.0, max_val_windows: int = 8192, seed: int = 0,
        device: str = "auto", n_threads: int = 0,
    ):
        """
        Args:
            horizon: steps predicted at once (at most one season); longer forecasts are recursive.
            input_steps: recent values the LSTM reads.
            lookback_days: past days whose same-hour changes are averaged into a feature.
            hidden_size, head_size: widths of the LSTM state and of the head's hidden layer.
            levels: interval levels learnt as quantiles (others are rescaled from the nearest).
            max_epochs, patience: training stops after ``patience`` epochs without a better
                validation loss, or at ``max_epochs``.
            windows_per_epoch: training windows drawn (without replacement) per epoch.
            val_days: the last ``val_days`` seasons of every series are the validation split.
            max_val_windows: validation windows kept (evenly spaced subsample).
            seed: seeds weights and window sampling (results repeat on CPU).
            device: "auto" (CUDA when available), "cpu" or "cuda".
            n_threads: torch CPU threads while fitting and forecasting; 0 = one per core.
        """
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"lstm: device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        for name, value in (("horizon", horizon), ("input_steps", input_steps), ("lookback_days", lookback_days),
                            ("hidden_size", hidden_size), ("head_size", head_size), ("max_epochs", max_epochs),
                            ("windows_per_epoch", windows_per_epoch), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ConfigError(f"lstm: {name} must be a positive integer, got {value}")
        self.horizon = int(horizon)
        self.input_steps = int(input_steps)
        self.lookback_days = int(lookback_days)
        self.hidden_size = int(hidden_size)
        self.head_size = int(head_size)
        self.levels = tuple(int(v) for v in levels)
        self.max_epochs = int(max_epochs)
        self.patience = int(patience)
        self.windows_per_epoch = int(windows_per_epoch)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.val_days = float(val_days)
        self.max_val_windows = int(max_val_windows)
        self.seed = int(seed)
        self.device = device
        self.n_threads = int(n_threads)
        self._net: _Net | None = None

    # -- pickling: weights as numpy arrays, the module rebuilt lazily -----------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_net"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def _device(self) -> torch.device:
        if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available()):
            return torch.device("cuda")
        return torch.device("cpu")

    def _new_net(self) -> _Net:
        return _Net(self.n_static_, N_ANCHORS, self.horizon_, self.quantiles_.size, self.hidden_size, self.head_size)

    def _module(self) -> _Net:
        """The network with the fitted weights, on the chosen device."""
        if self._net is None:
            if not hasattr(self, "state_"):
                raise ConfigError("lstm: the model is not fitted; call fit_many() first")
            net = self._new_net()
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.state_.items()})
            self._net = net.to(self._device()).eval()
        return self._net

    # -- features --------------------------------------------------------------

    @property
    def _context(self) -> int:
        """Values before the cutoff the features read (the cutoff's own value excluded)."""
        return self.lookback_days * self.season_length_ + self.input_steps

    def _features(self, ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sequence (n, input_steps, 2), static (n, n_static) and anchor (n, horizon, anchors)
        features from scaled contexts. The network's inputs are squashed with asinh (linear
        near zero, logarithmic for spikes); the anchors stay as they are.

        Args:
            ctx: shape (n, context + 1), the last column the value at the cutoff, NaN
                where the series had not started.
        """
        m, L, H, P = self.season_length_, self.input_steps, self.horizon_, self._context
        last = ctx[:, -1:]
        window = ctx[:, -L:]
        day_before = ctx[:, P + 1 - L - m : P + 1 - m]
        seq = np.stack([window - last, window - day_before], axis=-1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of the left padding
            level = last[:, 0] - np.nanmedian(ctx[:, -m:], axis=1)
            sdiff = last[:, 0] - ctx[:, P - m]
            k = np.arange(1, H + 1)
            changes = np.stack([ctx[:, P - d * m + k] - ctx[:, P - d * m : P - d * m + 1]
                                for d in range(1, self.lookback_days + 1)], axis=1)  # (n, days, H)
            mean_change = np.nanmean(changes, axis=1)
        seasonal_naive = ctx[:, P - m + k] - last
        static = np.concatenate([level[:, None], sdiff[:, None], changes[:, 0], mean_change], axis=1)
        anchors = np.stack([np.zeros_like(seasonal_naive), np.broadcast_to(-level[:, None], seasonal_naive.shape),
                            seasonal_naive, mean_change], axis=-1)
        seq = np.arcsinh(np.nan_to_num(seq, nan=0.0))
        static = np.arcsinh(np.nan_to_num(static, nan=0.0))
        anchors = np.nan_to_num(anchors, nan=0.0)
        return seq.astype("float32"), static.astype("float32"), anchors.astype("float32")

    def _scale(self, y: np.ndarray) -> float:
        """A series' scale: the in-sample MAE of the seasonal naive over its last eight days."""
        m = self.season_length_
        return seasonal_naive_scale(y[-SCALE_DAYS * m :], m)

    def _contexts(self, flat: np.ndarray, cut: np.ndarray) -> np.ndarray:
        """Rows ``flat[cut - context : cut + 1]`` (``flat`` is left-padded with NaN)."""
        return flat[cut[:, None] + np.arange(-self._context, 1)[None, :]]

    # -- training --------------------------------------------------------------

    def fit_many(self, ys: Sequence[np.ndarray], season_length: int) -> LSTM:
        """Train on windows of every series; the last ``val_days`` of each validate.

        Raises:
            ConfigError: ``horizon`` is longer than a season.
            SeriesTooShortError: no series is long enough for a single training window.
        """
        started = time.perf_counter()
        m = int(season_length)
        if self.horizon > m:
            raise ConfigError(
                f"lstm: horizon ({self.horizon} steps) is longer than a season ({m} steps); lower it "
                "(forecasts beyond it are made block by block)"
            )
        self.season_length_ = m
        self.horizon_ = self.horizon
        self.quantiles_ = _quantiles(self.levels)
        self.n_static_ = 2 + 2 * self.horizon_
        H, P = self.horizon_, self._context
        flats, train_cuts, val_cuts, offset = [], [], [], 0
        for y in ys:
            y = np.asarray(y, dtype="float64").ravel()
            if not np.isfinite(y).all():
                raise ValueError(f"lstm got {int((~np.isfinite(y)).sum())} missing value(s); fill gaps first")
            z = y / self._scale(y)
            n = z.size
            val_steps = int(round(self.val_days * m))
            first = m + self.input_steps - 1  # first cutoff with a full day-before sequence
            if n - val_steps - first - H < m // 2:  # too short to spare a day: validate on a fifth
                val_steps = max(H + 1, n // 5)
            train_end = n - val_steps  # targets of training windows stay before this index
            tr = np.arange(first, train_end - H)
            va = np.arange(max(first, train_end - 1), n - H)
            flats.append(np.concatenate([np.full(P, np.nan), z]))
            train_cuts.append(offset + P + tr)
            val_cuts.append(offset + P + va)
            offset += P + n
        flat = np.concatenate(flats).astype("float32") if flats else np.empty(0, dtype="float32")
        train_cuts = np.concatenate(train_cuts) if train_cuts else np.empty(0, dtype="int64")
        val_cuts = np.concatenate(val_cuts) if val_cuts else np.empty(0, dtype="int64")
        if train_cuts.size == 0:
            raise SeriesTooShortError(
                f"lstm: no series is long enough to train on (each needs more than {m + self.input_steps + H} "
                "values plus a validation part); give it more history"
            )
        if val_cuts.size > self.max_val_windows:
            val_cuts = val_cuts[np.linspace(0, val_cuts.size - 1, self.max_val_windows).astype("int64")]

        threads = torch.get_num_threads()
        torch.set_num_threads(self.n_threads or os.cpu_count() or 1)
        try:
            self._train(flat, train_cuts, val_cuts)
        finally:
            torch.set_num_threads(threads)
        log.info("lstm: %d series, %d training and %d validation windows, %d epochs (best %d) in %.1f s",
                 len(ys), train_cuts.size, val_cuts.size, self.epochs_, self.best_epoch_,
                 time.perf_counter() - started)
        return self

    def _batch(self, flat: np.ndarray, cuts: np.ndarray, device: torch.device):
        ctx = self._contexts(flat, cuts)
        target = flat[cuts[:, None] + np.arange(1, self.horizon_ + 1)[None, :]] - ctx[:, -1:]
        arrays = (*self._features(ctx), target.astype("float32"))
        return tuple(torch.from_numpy(a).to(device) for a in arrays)

    @staticmethod
    def _pinball(pred: torch.Tensor, target: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        diff = target.unsqueeze(-1) - pred
        return torch.maximum(q * diff, (q - 1) * diff).mean()

    def _train(self, flat: np.ndarray, train_cuts: np.ndarray, val_cuts: np.ndarray) -> None:
        device = self._device()
        rng = np.random.default_rng(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = self._new_net().to(device)
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        q = torch.tensor(self.quantiles_, dtype=torch.float32, device=device)
        val = self._batch(flat, val_cuts, device) if val_cuts.size else None
        best_loss, best_state, best_epoch, stale = np.inf, None, 0, 0
        self.val_losses_: list[float] = []
        self.epochs_ = 0
        started = time.perf_counter()
        for epoch in range(1, self.max_epochs + 1):
            net.train()
            picked = rng.choice(train_cuts, size=min(self.windows_per_epoch, train_cuts.size), replace=False)
            *inputs, target = self._batch(flat, picked, device)
            for start in range(0, picked.size, self.batch_size):
                part = slice(start, start + self.batch_size)
                opt.zero_grad()
                loss = self._pinball(net(*(x[part] for x in inputs)), target[part], q)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
            self.epochs_ = epoch
            if val is None:
                best_state, best_epoch = copy.deepcopy(net.state_dict()), epoch
                continue
            net.eval()
            with torch.no_grad():
                val_loss = float(self._pinball(net(*val[:-1]), val[-1], q))
            self.val_losses_.append(val_loss)
            took = time.perf_counter() - started
            log.info("lstm epoch %d/%d: training loss %.4f, validation loss %.4f, %.0f s so far, at most %.0f s left",
                     epoch, self.max_epochs, loss.item(), val_loss, took, took / epoch * (self.max_epochs - epoch))
            if best_state is None or val_loss < best_loss - 1e-4 * abs(best_loss):
                best_loss, best_state, best_epoch, stale = val_loss, copy.deepcopy(net.state_dict()), epoch, 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        net.load_state_dict(best_state)
        net.eval()
        self.best_epoch_ = best_epoch
        self.state_ = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
        self._net = net
        self.adjust_ = self._conformal(val) if val is not None else {}

    def _raw(self, inputs: Sequence[torch.Tensor | np.ndarray]) -> np.ndarray:
        """Sorted quantiles of the change from the last value, shape (n, horizon, quantiles)."""
        net = self._module()
        device = next(net.parameters()).device
        with torch.no_grad():
            out = net(*(torch.as_tensor(x, device=device) for x in inputs))
        return np.sort(out.cpu().numpy().astype("float64"), axis=-1)

    def _conformal(self, val) -> dict[int, np.ndarray]:
        """Per level and step, how much to widen (or narrow) the learnt bounds so that the
        validation windows are covered at the nominal rate (conformalised quantile regression)."""
        pred = self._raw(val[:-1])
        target = val[-1].cpu().numpy().astype("float64")
        n = target.shape[0]
        adjust = {}
        for level in self.levels:
            lo = pred[..., self._qindex(0.5 - level / 200.0)]
            hi = pred[..., self._qindex(0.5 + level / 200.0)]
            score = np.maximum(lo - target, target - hi)
            q = min(1.0, np.ceil((n + 1) * level / 100.0) / n)
            adjust[level] = np.quantile(score, q, axis=0, method="higher")
        return adjust

    def _qindex(self, quantile: float) -> int:
        return int(np.argmin(np.abs(self.quantiles_ - quantile)))

    # -- forecasting -----------------------------------------------------------

    def _block(self, ctx: np.ndarray) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Median change and per-level (lower, upper) offsets from it for one block of ``horizon`` steps."""
        pred = self._raw(self._features(ctx))
        median = pred[..., self._qindex(0.5)]
        bounds = {}
        for level in self.levels:
            adj = self.adjust_.get(level, 0.0)
            lo = pred[..., self._qindex(0.5 - level / 200.0)] - adj
            hi = pred[..., self._qindex(0.5 + level / 200.0)] + adj
            bounds[level] = (np.maximum(median - lo, 0.0), np.maximum(hi - median, 0.0))
        # wider levels never give narrower bounds
        previous = None
        for level in sorted(bounds):
            if previous is not None:
                bounds[level] = tuple(np.maximum(b, p) for b, p in zip(bounds[level], bounds[previous], strict=True))
            previous = level
        return median, bounds

    def _forecast(self, ctx: np.ndarray, h: int) -> tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Scaled forecasts (n, h) and the lower/upper offsets per fitted level, block by block."""
        means, offsets = [], {level: ([], []) for level in self.levels}
        carry = {level: (np.zeros(ctx.shape[0]), np.zeros(ctx.shape[0])) for level in self.levels}
        done = 0
        while done < h:
            median, bounds = self._block(ctx)
            mean = ctx[:, -1:] + median
            means.append(mean)
            for level, (lo, hi) in bounds.items():
                c_lo, c_hi = carry[level]
                lo_total = np.sqrt(c_lo[:, None] ** 2 + lo**2)
                hi_total = np.sqrt(c_hi[:, None] ** 2 + hi**2)
                offsets[level][0].append(lo_total)
                offsets[level][1].append(hi_total)
                carry[level] = (lo_total[:, -1], hi_total[:, -1])
            ctx = np.concatenate([ctx, mean], axis=1)[:, -ctx.shape[1]:]
            done += self.horizon_
        mean = np.concatenate(means, axis=1)[:, :h]
        return mean, {lvl: (np.concatenate(lo, 1)[:, :h], np.concatenate(hi, 1)[:, :h])
                      for lvl, (lo, hi) in offsets.items()}

    def _intervals(self, mean: np.ndarray, offsets: dict, levels: Sequence[int]) -> Forecast:
        out: Forecast = {"mean": mean}
        for level in levels:
            level = int(level)
            if level in offsets:
                lo, hi = offsets[level]
            else:  # a level not learnt: the nearest learnt one, rescaled as a normal quantile would be
                nearest = min(offsets, key=lambda kept: abs(kept - level))
                ratio = z_value(level) / z_value(nearest)
                lo, hi = offsets[nearest][0] * ratio, offsets[nearest][1] * ratio
            out[f"lo-{level}"] = mean - lo
            out[f"hi-{level}"] = mean + hi
        return out

    def forecast_origins_many(
        self,
        histories: Sequence[np.ndarray],
        futures: Sequence[np.ndarray],
        origins: Sequence[int],
        h: int,
        levels: Sequence[int] = LEVELS,
    ) -> list[Forecast]:
        """Every series x origin, ``PREDICT_WINDOWS`` windows to a forward pass per block of ``horizon`` steps.

        Each forecast reads only ``history + future[:origin]``; the scale comes from the history.
        Windows are independent, so cutting them into passes changes no forecast; it keeps the
        network's activations to those of one pass (all 4,000 series x 49 origins at once
        held 5 GB).
        """
        if not hasattr(self, "state_"):
            raise ConfigError("lstm: the model is not fitted; call fit_many() first")
        if len(histories) != len(futures):
            raise ConfigError(f"lstm: {len(histories)} histories but {len(futures)} futures; pass one per series")
        origins = np.asarray(origins, dtype="int64")
        n_series, n_origins = len(histories), origins.size
        if n_series == 0 or n_origins == 0:
            return [empty_forecast(h, levels) for _ in range(n_series)]
        per_pass = max(1, PREDICT_WINDOWS // n_origins)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.n_threads or os.cpu_count() or 1)
        try:
            results = []
            for start in range(0, n_series, per_pass):
                part = slice(start, start + per_pass)
                results += self._forecast_series(histories[part], futures[part], origins, h, levels)
        finally:
            torch.set_num_threads(threads)
        return results

    def _forecast_series(self, histories, futures, origins: np.ndarray, h: int, levels) -> list[Forecast]:
        """``forecast_origins_many`` for a few series, in one forward pass per block."""
        P, n_origins = self._context, origins.size
        ctxs, scales, nonneg = [], [], []
        for history, future in zip(histories, futures, strict=True):
            history, known = known_context("lstm", history, future, origins)
            scale = self._scale(history)
            flat = np.concatenate([np.full(P, np.nan), known / scale])
            cuts = P + history.size + origins - 1
            ctxs.append(self._contexts(flat, cuts))
            scales.append(scale)
            nonneg.append(history.min() >= 0)
        mean, offsets = self._forecast(np.concatenate(ctxs), h)
        results = []
        for i, (scale, positive) in enumerate(zip(scales, nonneg, strict=True)):
            rows = slice(i * n_origins, (i + 1) * n_origins)
            fc = self._intervals(mean[rows], {lv: (lo[rows], hi[rows]) for lv, (lo, hi) in offsets.items()}, levels)
            fc = {k: v * scale for k, v in fc.items()}
            if positive:  # usage never goes below zero when its history never did
                fc = {k: np.maximum(v, 0.0) for k, v in fc.items()}
            results.append(fc)
        return results
