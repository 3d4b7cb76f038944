"""Training one symbol's model, and predicting with it.

`train(symbol, frame, cut, cfg)` fits on the `train_hours` hours before `cut` (nothing at or after
`cut` is looked at). The latest `validation_fraction` of those samples is the validation split:
early stopping watches it, the promotion rule judges on it (with the baselines on the same hours),
and the prediction interval comes from its residual quantiles. Seeds are fixed and TensorFlow runs
deterministic ops, so the same data and configuration give the same model.
"""

from __future__ import annotations

import functools
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cryptoflow.forecast import architectures, baselines, evidence, metrics
from cryptoflow.forecast.config import ForecastConfig
from cryptoflow.forecast.data import HOUR, before, to_utc
from cryptoflow.forecast.windows import Samples, Scaler, feature_frame, latest_window, make_samples

if TYPE_CHECKING:
    import keras  # imported at run time only where a model is built or loaded


class NotEnoughData(ValueError):
    """Too few complete hours to train (or evaluate) a model; the message says how many."""


@dataclass
class Forecast:
    symbol: str
    target_time: datetime  # open time of the predicted hour
    predicted_close: float
    lower_close: float | None
    upper_close: float | None
    last_close: float  # the persistence forecast
    model_version: str
    served_reason: str | None = (
        None  # why this model (or persistence) served the hour; stored with the row
    )

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["target_time"] = to_utc(self.target_time).isoformat()
        return d


@dataclass
class TrainedModel:
    model: keras.Model
    scaler: Scaler
    metadata: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.metadata["version"]

    @property
    def symbol(self) -> str:
        return self.metadata["symbol"]

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.metadata["hyperparameters"]["features"])

    @property
    def lookback(self) -> int:
        return int(self.metadata["hyperparameters"]["lookback"])

    def predict_returns(self, X: np.ndarray) -> np.ndarray:
        """Next log returns (n, horizon) for unscaled windows X (n, lookback, n_features).

        predict_on_batch runs the compiled predict function: ~2 ms for one window here, where an
        eager model(x) call takes ~90 ms (per-timestep ops) and predict() adds a tf.data pipeline.
        """
        out = []
        for i in range(0, len(X), 4096):
            out.append(np.asarray(self.model.predict_on_batch(self.scaler.x(X[i : i + 4096]))))
        scaled = np.concatenate(out) if out else np.empty((0, 1))
        return self.scaler.inverse_y(scaled)

    @property
    def policy(self) -> evidence.Policy:
        """How the raw output is served (shrinkage, tick grid), fitted on validation by `train`."""
        return evidence.Policy.from_dict(self.metadata.get("policy"))

    def served_closes(self, X: np.ndarray, last_close: np.ndarray) -> np.ndarray:
        """The closes this model serves for windows X: the policy applied to the predicted returns."""
        return self.policy.closes(last_close, self.predict_returns(X)[:, 0])

    def interval(self, pred_return, last_close):
        """The raw model's interval from its validation residual quantiles (reported as "model_raw";
        served forecasts carry conformal intervals, see serving.py)."""
        q = self.metadata.get("interval") or {}
        if "q_low" not in q:
            return None, None
        return (
            np.asarray(last_close) * np.exp(np.asarray(pred_return) + q["q_low"]),
            np.asarray(last_close) * np.exp(np.asarray(pred_return) + q["q_high"]),
        )

    def forecast(self, history: pd.DataFrame, target_time: datetime) -> Forecast | None:
        """The raw one-hour-ahead forecast of the hour starting at target_time, from rows before it only."""
        got = latest_window(history, self.features, self.lookback, target_time)
        if got is None:
            return None
        window, last = got
        return self.forecast_windows(window, np.array([last]), [target_time])[0]

    def forecast_windows(
        self, X: np.ndarray, last_close: np.ndarray, target_times
    ) -> list[Forecast]:
        """Raw forecasts (no shrinkage, validation-quantile interval) from ready-made input windows, one
        model call for all: the backtest's "model_raw" figures."""
        if len(X) == 0:
            return []
        r = self.predict_returns(X)[:, 0]
        pred = np.asarray(last_close) * np.exp(r)
        lo, hi = self.interval(r, last_close)
        return [
            Forecast(
                self.symbol,
                to_utc(t),
                float(pred[i]),
                None if lo is None else float(lo[i]),
                None if hi is None else float(hi[i]),
                float(last_close[i]),
                self.version,
            )
            for i, t in enumerate(target_times)
        ]

    def forecast_hours(self, frame: pd.DataFrame, target_times, raw: bool = False) -> pd.DataFrame:
        """Forecasts for many target hours at once (evaluation): each from the hours before it only.

        Same windows as `forecast` (make_samples lays them out identically), built in one pass.
        Columns: predicted_close (the served close, or the raw model's with `raw`), lower_close,
        upper_close (raw: validation quantiles; served: NaN, see serving.py), last_close,
        actual_close; rows for target hours whose window is complete.
        """
        targets = pd.DatetimeIndex(target_times)
        feats = feature_frame(frame, self.features)
        s = make_samples(feats, self.features, self.lookback, 1)
        keep = s.target_time.isin(targets)
        s = s.subset(keep)
        r = self.predict_returns(s.X)[:, 0] if len(s) else np.empty(0)
        lo, hi = self.interval(r, s.last_close) if raw else (None, None)
        return pd.DataFrame(
            {
                "predicted_close": s.last_close * np.exp(r)
                if raw
                else self.policy.closes(s.last_close, r),
                "lower_close": lo if lo is not None else np.nan,
                "upper_close": hi if hi is not None else np.nan,
                "last_close": s.last_close,
                "actual_close": s.actual_close,
            },
            index=s.target_time,
        )


def configure_tensorflow(seed: int) -> None:
    """Fixed seeds and deterministic ops; thread pools sized once (only possible before TF starts)."""
    import tensorflow as tf

    from cryptoflow import settings

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    threads = settings.load().forecast_tf_threads
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process: its pools stay as they are


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Git commit of the checkout (+dirty), or CRYPTOFLOW_CODE_VERSION where there is no git (images)."""
    from cryptoflow import settings

    cfg = settings.load()
    if cfg.code_version:
        return cfg.code_version
    try:
        home = str(cfg.home)
        rev = subprocess.run(
            ["git", "-C", home, "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", home, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        if rev:
            return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "cryptoflow-" + version("cryptoflow")
    except PackageNotFoundError:
        return "unknown"


def training_samples(
    frame: pd.DataFrame, cut: datetime, cfg: ForecastConfig
) -> tuple[pd.DataFrame, Samples]:
    cut_ts = pd.Timestamp(to_utc(cut))
    window = before(frame, cut)
    window = window.loc[window.index >= cut_ts - HOUR * cfg.train_hours]
    feats = feature_frame(window, cfg.features, end=cut) if len(window) else window
    if window.empty:
        raise NotEnoughData(f"no complete hours before {cut_ts}")
    return feats, make_samples(feats, cfg.features, cfg.lookback, cfg.horizon)


def _split(samples: Samples, cfg: ForecastConfig) -> tuple[Samples, Samples]:
    """(training, validation): the latest validation_fraction (at least 24 samples) validates."""
    n_val = max(int(len(samples) * cfg.validation_fraction), 24)
    # Purge: training targets reaching into the validation hours (horizon > 1) would leak them.
    return (
        samples.subset(slice(0, len(samples) - n_val - (cfg.horizon - 1))),
        samples.subset(slice(len(samples) - n_val, None)),
    )


# One model across coins: the weights fitted on the pooled data at a cut, shared by every coin's
# copy of the model (each coin trains the same data in the same order, so this only saves time).
_pooled_fits: dict[tuple, tuple[list, dict]] = {}


def _pool_parts(
    symbol: str,
    own: tuple,
    cut: datetime,
    cfg: ForecastConfig,
    min_samples: int,
    pool: dict[str, pd.DataFrame] | None,
) -> dict[str, tuple]:
    """{coin: (training, validation, scaler)}: `symbol`'s own `own`, and every coin of `cfg.pool`
    in `pool` with at least `min_samples` windows before the cut."""
    parts = {symbol: own}
    for other in cfg.pool:
        if other == symbol or pool is None or other not in pool:
            continue
        try:
            _, o_samples = training_samples(
                pool[other], cut, cfg
            )  # other coins: before the cut too
        except NotEnoughData:
            continue
        if len(o_samples) >= min_samples:
            o_tr, o_va = _split(o_samples, cfg)
            parts[other] = (o_tr, o_va, Scaler.fit(o_tr.X))
    return parts


def _stacked(parts: dict[str, tuple], order: list[str]):
    """(Xtr, ytr, Xva, yva): the coins' splits in `order`, each standardised with its own scaler."""
    Xtr = np.concatenate([parts[k][2].x(parts[k][0].X) for k in order])
    ytr = np.concatenate([parts[k][2].y(parts[k][0].y) for k in order])
    Xva = np.concatenate([parts[k][2].x(parts[k][1].X) for k in order])
    yva = np.concatenate([parts[k][2].y(parts[k][1].y) for k in order])
    return Xtr, ytr, Xva, yva


def _fit(order: list[str], cut: datetime, cfg: ForecastConfig, Xtr, ytr, Xva, yva):
    """(model, history): the network fitted with early stopping, or a pooled fit's weights reused."""
    import keras

    configure_tensorflow(cfg.seed)
    model = architectures.build(cfg.architecture, cfg.lookback, len(cfg.features), cfg.horizon)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="mse")
    key = (
        (tuple(order), to_utc(cut).isoformat(), cfg.model_fingerprint()) if len(order) > 1 else None
    )
    if key in _pooled_fits:
        weights, hist = _pooled_fits[key]
        model.set_weights(weights)
    else:
        hist = model.fit(
            Xtr,
            ytr,
            validation_data=(Xva, yva),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=cfg.patience, restore_best_weights=True
                )
            ],
        ).history
        if key is not None:
            _pooled_fits[key] = (model.get_weights(), hist)
    return model, hist


def _fit_interval_and_policy(
    trained: TrainedModel, feats: pd.DataFrame, va: Samples, cfg: ForecastConfig, tick: float | None
) -> None:
    """The metadata's interval and serving policy, both fitted on the validation hours."""
    # Validation: residuals of the next-hour return give the interval; metrics beside the baselines.
    val_r = trained.predict_returns(va.X)[:, 0]
    resid = va.y[:, 0] - val_r
    alpha = (1 - cfg.interval_level) / 2
    trained.metadata["interval"] = {
        "level": cfg.interval_level,
        "q_low": float(np.quantile(resid, alpha)),
        "q_high": float(np.quantile(resid, 1 - alpha)),
        "source": "validation residual quantiles of the log return",
    }
    # How the output is served, fitted on the same hours: the shrinkage toward persistence and
    # the tick grid (evidence.py); the promotion test cross-fits it (registry.decide).
    tick_source = "exchange" if tick else "inferred from the closes"
    if not tick:
        tick = evidence.infer_tick(feats["close"].to_numpy()[-cfg.interval_window_hours :])
    trained.metadata["policy"] = {
        **evidence.fit_policy(val_r, va.last_close, va.actual_close, tick).as_dict(),
        "tick_source": tick_source,
    }


def _data_window(tr: Samples, va: Samples, cut_utc: datetime, cfg: ForecastConfig) -> dict:
    """The hours trained and validated on (the first window's lookback included), as metadata."""
    return {
        "cut": cut_utc.isoformat(),
        "train_start": to_utc(tr.target_time[0] - HOUR * cfg.lookback).isoformat(),
        "train_end": to_utc(tr.target_time[-1] + HOUR).isoformat(),
        "validation_start": to_utc(va.target_time[0]).isoformat(),
        "validation_end": to_utc(va.target_time[-1] + HOUR).isoformat(),
        "n_train": len(tr),
        "n_validation": len(va),
    }


def train(
    symbol: str,
    frame: pd.DataFrame,
    cut: datetime,
    cfg: ForecastConfig,
    version: str | None = None,
    min_samples: int = 200,
    pool: dict[str, pd.DataFrame] | None = None,
    tick: float | None = None,
) -> TrainedModel:
    """Fit `symbol`'s model on the hours before `cut`.

    With `cfg.pool` (one model across coins) the network is fitted on the pooled training splits of
    every coin in the pool that has enough data (`pool`: their candle frames), each coin's windows
    standardised with its own scaler; early stopping watches the pooled validation splits. The
    coin's model is that network with the coin's scaler, and everything judged (interval, metrics,
    promotion) is on the coin's own validation hours.

    `tick`: the exchange's price grid for the coin (Binance's PRICE_FILTER tickSize, see
    sources.CandleHistory.tick_sizes); None infers it from the recent closes (evidence.infer_tick),
    as the backtest over files must.
    """
    import keras

    t0 = time.perf_counter()
    feats, tr, va = _own_splits(symbol, frame, cut, cfg, min_samples)
    scaler = Scaler.fit(tr.X)
    parts = _pool_parts(symbol, (tr, va, scaler), cut, cfg, min_samples, pool)
    order = sorted(parts)  # the same order whichever coin trains: the same network for all
    Xtr, ytr, Xva, yva = _stacked(parts, order)
    model, hist = _fit(order, cut, cfg, Xtr, ytr, Xva, yva)
    cut_utc = to_utc(cut)
    trained = TrainedModel(model, scaler, _identity(symbol, version, cut_utc, scaler, cfg))
    _fit_interval_and_policy(trained, feats, va, cfg, tick)
    evaluation = evaluate_on(trained, feats, va, cfg)
    trained.metadata.update(
        {
            "data_window": _data_window(tr, va, cut_utc, cfg),
            "metrics": evaluation["model"],
            "baseline_metrics": {k: v for k, v in evaluation.items() if k != "model"},
            **_fit_record(hist, order, symbol, ytr),
            "train_seconds": round(time.perf_counter() - t0, 2),
            "trained_at": datetime.now(timezone.utc).isoformat(),
            "code_version": code_version(),
            "keras_version": keras.__version__,
        }
    )
    return trained


def _own_splits(
    symbol: str, frame: pd.DataFrame, cut: datetime, cfg: ForecastConfig, min_samples: int
) -> tuple[pd.DataFrame, Samples, Samples]:
    """(features, training, validation) of the coin's own hours before `cut`; NotEnoughData below
    `min_samples` complete windows."""
    feats, samples = training_samples(frame, cut, cfg)
    if len(samples) < min_samples:
        raise NotEnoughData(
            f"{symbol}: {len(samples)} complete windows before {to_utc(cut)}; need {min_samples}"
        )
    tr, va = _split(samples, cfg)
    return feats, tr, va


def _identity(
    symbol: str, version: str | None, cut_utc: datetime, scaler: Scaler, cfg: ForecastConfig
) -> dict:
    """The metadata a model is born with: what it is (its version, named by cut unless given) and
    how it was configured."""
    version = version or f"{symbol}-{cfg.architecture}-{cut_utc:%Y%m%dT%H}Z-{uuid.uuid4().hex[:6]}"
    return {
        "version": version,
        "symbol": symbol,
        "architecture": cfg.architecture,
        "hyperparameters": cfg.hyperparameters(),
        "fingerprint": cfg.model_fingerprint(),
        "scaler": scaler.to_dict(),
    }


def _fit_record(hist: dict, order: list[str], symbol: str, ytr: np.ndarray) -> dict:
    """The metadata of the network's fit: epochs, the best one, the coins pooled with."""
    return {
        "epochs_run": len(hist["loss"]),
        "best_epoch": int(np.argmin(hist["val_loss"])) + 1,
        "pooled_with": [k for k in order if k != symbol],
        "n_train_pooled": int(len(ytr)),
    }


def evaluate_on(
    trained: TrainedModel, feats: pd.DataFrame, samples: Samples, cfg: ForecastConfig
) -> dict:
    """Model vs persistence, drift and EWMA on exactly the hours of `samples`."""
    r = trained.predict_returns(samples.X)[:, 0]
    pred = samples.last_close * np.exp(r)
    lo, hi = trained.interval(r, samples.last_close)
    base = baselines.predicted_closes(
        samples.last_close,
        baselines.predicted_returns(
            feats["log_return"], samples.target_time, cfg.drift_hours, cfg.ewma_span
        ),
    )
    return metrics.compare(samples.actual_close, samples.last_close, pred, base, lo, hi)
