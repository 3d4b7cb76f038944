"""The model registry: model files and metadata in object storage, an index row in the warehouse.

Layout under the store root (CRYPTOFLOW_MODEL_STORE_URI, file:// or s3://bucket/prefix):

    <symbol>/<version>/model.keras      the Keras model
    <symbol>/<version>/metadata.json    data window, hyperparameters, scaler, metrics with the
                                        baselines' on the same hours, interval, code version
    <symbol>/current.json               pointer to the promoted version (absent: none is served)
    <symbol>/last_attempt.json          the latest training attempt (drives the retrain cadence)

Files of a version are written before any pointer names it, so a reader never follows a pointer
to a half-written model. Paths go through Airflow's ObjectStoragePath: s3:// uses the Airflow
connection `cryptoflow_models` (an aws connection whose extra may carry endpoint_url for MinIO).
The warehouse table forecast.model_versions mirrors every version with its status.

Promotion (`decide`): the new model is promoted only if, on its own validation window, it beats
persistence by more than chance explains (evidence.promotion_evidence: its served policy
cross-fitted, a one-sided Diebold-Mariano test on absolute errors, p below `promotion_p_value`)
AND its MAE is at most the current model's (re-evaluated on the same hours). A current model that
now loses to persistence is retired even when the new one fails too: then nothing is promoted and
the DAG serves persistence, labelled as such, rather than a model known to be worse. A served
model that loses live is retired between trainings (`retire`, hourly.retire_if_losing).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from cryptoflow.forecast import evidence
from cryptoflow.forecast.config import ForecastConfig
from cryptoflow.forecast.data import to_utc
from cryptoflow.forecast.train import TrainedModel
from cryptoflow.forecast.windows import Scaler

CONN_ID = "cryptoflow_models"


class ModelUnavailable(Exception):
    """A registered model can't be loaded (files missing, corrupt, unreadable metadata)."""


@dataclass
class Decision:
    action: str  # promote | keep_current | none_served
    reason: str
    comparison: dict = field(default_factory=dict)

    @property
    def promote(self) -> bool:
        return self.action == "promote"


def decide(
    new: TrainedModel,
    current: TrainedModel | None,
    frame: pd.DataFrame,
    cfg: ForecastConfig | None = None,
) -> Decision:
    """Compare new, current and persistence on the new model's validation hours.

    The new model must beat persistence on evidence (cross-fitted policy, DM p < promotion_p_value)
    and survive the live-retirement rule on the latest of those hours (a model the next hours
    would retire is not promoted: no promote-retire-retrain churn after a regime change); the
    current model is judged by what it serves (its own policy) on the same hours.
    `frame` must hold the hours the new model was trained on (nothing after its cut is needed).
    """
    cfg = cfg or ForecastConfig()
    new_f, cur_f, idx = _validation_forecasts(new, current, frame)
    if len(idx) == 0:
        return Decision(
            "none_served" if current is None else "keep_current",
            "no validation hours to compare on",
            {},
        )
    actual = new_f.loc[idx, "actual_close"].to_numpy()
    last = new_f.loc[idx, "last_close"].to_numpy()
    ev = evidence.promotion_evidence(
        np.log(new_f.loc[idx, "predicted_close"].to_numpy() / last), last, actual, new.policy.tick
    )
    comp = _comparison(new, new_f.loc[idx, "predicted_close"], idx, ev, last, actual, cfg)
    new_ok, verdict = _judge_new(new, ev, last, actual, cfg, comp)
    if current is None:
        if new_ok:
            return Decision("promote", f"no current model; new model {verdict}", comp)
        return Decision("none_served", f"new model {verdict}; persistence serves", comp)
    assert cur_f is not None  # forecast whenever there is a current model
    comp["mae_current"] = _mae(cur_f.loc[idx, "predicted_close"], actual)
    comp["current_version"] = current.version
    return _against_current(new_ok, verdict, comp)


def _validation_forecasts(
    new: TrainedModel, current: TrainedModel | None, frame: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DatetimeIndex]:
    """(the new model's raw forecasts, the current model's served ones or None, the hours both
    have) on the new model's validation hours."""
    dw = new.metadata["data_window"]
    hours = pd.date_range(dw["validation_start"], dw["validation_end"], freq="h", inclusive="left")
    new_f = new.forecast_hours(frame, hours, raw=True)
    idx = new_f.index
    cur_f = None
    if current is not None:
        cur_f = current.forecast_hours(frame, hours)
        idx = idx.intersection(cur_f.index)  # the same hours for everyone
    return new_f, cur_f, idx


def _mae(predicted, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted) - actual)))


def _comparison(
    new: TrainedModel,
    new_raw: pd.Series,
    idx: pd.DatetimeIndex,
    ev: dict,
    last: np.ndarray,
    actual: np.ndarray,
    cfg: ForecastConfig,
) -> dict:
    """The decision's record: the new model (served policy cross-fitted, and raw) vs persistence."""
    return {
        "n": len(idx),
        "window": [str(idx[0]), str(idx[-1])],
        "mae_new": ev["mae_cross_fitted"],
        "mae_persistence": _mae(last, actual),
        "mae_new_raw": _mae(new_raw, actual),
        "alpha": new.policy.alpha,
        "round_to_tick": new.policy.round_to_tick,
        "dm_statistic": ev["statistic"],
        "dm_p_value": ev["p_value"],
        "p_value_required": cfg.promotion_p_value,
    }


def _against_current(new_ok: bool, verdict: str, comp: dict) -> Decision:
    """The decision when a model is served: the new one replaces it if at least as good, else the
    current one stays while it still beats persistence; neither serves otherwise."""
    cur_ok = comp["mae_current"] <= comp["mae_persistence"]
    if new_ok and comp["mae_new"] <= comp["mae_current"]:
        return Decision(
            "promote", f"new model {verdict}, at least as good as the current one", comp
        )
    if cur_ok:
        why = verdict if not new_ok else "worse than the current model"
        return Decision("keep_current", f"new model {why}; current model kept", comp)
    return Decision(
        "none_served",
        f"new model {verdict}; the current one now worse than persistence, retired",
        comp,
    )


def _judge_new(
    new: TrainedModel,
    ev: dict,
    last: np.ndarray,
    actual: np.ndarray,
    cfg: ForecastConfig,
    comp: dict,
) -> tuple[bool, str]:
    """(whether the new model may serve, why): it beats persistence beyond chance and the
    live-retirement rule would keep it on the latest validation hours (their verdict into `comp`)."""
    p_value = cfg.promotion_p_value
    new_ok = ev["p_value"] < p_value
    verdict = (
        f"beats persistence beyond chance (DM p={ev['p_value']:.3g} < {p_value:g}, "
        f"cross-fitted MASE {ev['mase_cross_fitted']:.4f})"
        if new_ok
        else f"not better than persistence beyond chance (DM p={ev['p_value']:.3g}, needs < {p_value:g}; "
        f"cross-fitted MASE {ev['mase_cross_fitted']:.4f}, shrinkage {new.policy.alpha:g})"
    )
    if new_ok:
        retire, why = evidence.live_verdict(
            ev["served"], last, actual, **evidence.retirement_rule(cfg)
        )
        comp["latest_hours"] = why
        if retire:
            new_ok = False
            verdict = (
                f"beats persistence over its validation (DM p={ev['p_value']:.3g}) but would be retired on "
                f"the latest of those hours: {why}"
            )
    return new_ok, verdict


class BaseRegistry(ABC):
    """What the hourly steps need from a registry (object store or in memory, for the backtest)."""

    @abstractmethod
    def current_pointer(self, symbol: str) -> dict | None: ...
    @abstractmethod
    def last_attempt(self, symbol: str) -> dict | None: ...
    @abstractmethod
    def load(self, symbol: str, version: str) -> TrainedModel: ...
    @abstractmethod
    def save(self, trained: TrainedModel, status: str, reason: str) -> str: ...
    @abstractmethod
    def set_current(self, trained: TrainedModel, reason: str) -> None: ...
    @abstractmethod
    def clear_current(self, symbol: str, reason: str) -> None: ...
    @abstractmethod
    def put_attempt(self, symbol: str, attempt: dict) -> None: ...

    def retire(self, symbol: str, reason: str, at) -> None:
        """Stop serving the current model now; the retry back-off counts from `at` as after a rejection."""
        attempt = _or_none(self.last_attempt, symbol) or {}
        self.clear_current(symbol, reason)
        if attempt:
            self.put_attempt(
                symbol,
                {
                    **attempt,
                    "retired_at": to_utc(at).isoformat(),
                    "retired_reason": reason,
                    "rejections_in_a_row": int(attempt.get("rejections_in_a_row", 0)) + 1,
                },
            )

    def current(self, symbol: str) -> TrainedModel | None:
        ptr = self.current_pointer(symbol)
        return None if ptr is None else self.load(symbol, ptr["version"])

    def unavailable(self, symbol: str, version: str) -> str | None:
        """Why `version` can't be loaded, or None when it can."""
        try:
            self.load(symbol, version)
        except ModelUnavailable as exc:
            return str(exc)
        return None

    def record(self, trained: TrainedModel, decision: Decision) -> None:
        """Store the new model with its decision applied (status, pointer)."""
        status = "promoted" if decision.promote else "rejected"
        previous = _or_none(self.last_attempt, trained.symbol) or {}
        # Drives the retry back-off (hourly.retry_wait_hours) while nothing better than persistence is found.
        in_a_row = 0 if decision.promote else int(previous.get("rejections_in_a_row", 0)) + 1
        trained.metadata["promotion"] = {
            "action": decision.action,
            "reason": decision.reason,
            "rejections_in_a_row": in_a_row,
            **decision.comparison,
        }
        self.save(trained, status, decision.reason)
        if decision.promote:
            self.set_current(trained, decision.reason)
        elif decision.action == "none_served" and _or_none(self.current_pointer, trained.symbol):
            self.clear_current(trained.symbol, decision.reason)


def _or_none(read, symbol):
    """A pointer document, or None when absent or damaged (for writers about to replace it)."""
    try:
        return read(symbol)
    except ModelUnavailable:
        return None


def _pointer(trained: TrainedModel, reason: str) -> dict:
    return {
        "version": trained.version,
        "cut": trained.metadata["data_window"]["cut"],
        "fingerprint": trained.metadata.get("fingerprint"),
        "reason": reason,
        "promoted_at": datetime.now(timezone.utc).isoformat(),
    }


def _attempt(trained: TrainedModel, status: str, reason: str) -> dict:
    return {
        "version": trained.version,
        "cut": trained.metadata["data_window"]["cut"],
        "status": status,
        "reason": reason,
        "fingerprint": trained.metadata.get("fingerprint"),
        "rejections_in_a_row": (trained.metadata.get("promotion") or {}).get(
            "rejections_in_a_row", 0 if status == "promoted" else 1
        ),
        "at": datetime.now(timezone.utc).isoformat(),
    }


class MemoryRegistry(BaseRegistry):
    """Same behaviour, nothing persisted: the walk-forward backtest replays decisions with it."""

    def __init__(self):
        self.models: dict[tuple[str, str], TrainedModel] = {}
        self.pointers: dict[str, dict] = {}
        self.attempts: dict[str, dict] = {}
        self.history: list[dict] = []

    def current_pointer(self, symbol):
        return self.pointers.get(symbol)

    def last_attempt(self, symbol):
        return self.attempts.get(symbol)

    def load(self, symbol, version):
        try:
            return self.models[(symbol, version)]
        except KeyError:
            raise ModelUnavailable(f"no model {version} for {symbol} in memory") from None

    def save(self, trained, status, reason):
        self.models[(trained.symbol, trained.version)] = trained
        self.attempts[trained.symbol] = _attempt(trained, status, reason)
        self.history.append(self.attempts[trained.symbol])
        return f"memory://{trained.symbol}/{trained.version}"

    def set_current(self, trained, reason):
        self.pointers[trained.symbol] = _pointer(trained, reason)

    def clear_current(self, symbol, reason):
        self.pointers.pop(symbol, None)

    def put_attempt(self, symbol, attempt):
        self.attempts[symbol] = attempt


class ObjectRegistry(BaseRegistry):
    """The registry in object storage (file://, s3://), indexed in forecast.model_versions when `conn` is given."""

    def __init__(self, root: str, conn=None, conn_id: str | None = CONN_ID):
        from airflow.sdk import ObjectStoragePath

        self.uri = root.rstrip("/")
        local = self.uri.startswith("file://") or "://" not in self.uri
        if "://" not in self.uri:
            self.uri = "file://" + os.path.abspath(self.uri)
        # file:// needs no connection; asking for one would fail where none is defined.
        self.root = (
            ObjectStoragePath(self.uri) if local else ObjectStoragePath(self.uri, conn_id=conn_id)
        )
        self.conn = conn
        self._loaded: dict[str, TrainedModel] = {}

    @classmethod
    def from_settings(cls, conn=None) -> "ObjectRegistry":
        from cryptoflow import settings

        return cls(settings.load().model_store_uri, conn=conn)

    def _dir(self, symbol: str, version: str | None = None):
        d = self.root / symbol
        return d / version if version else d

    def _read_json(self, path) -> dict | None:
        """The document, None when absent, ModelUnavailable when damaged (never a guess from half a file)."""
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelUnavailable(
                f"unreadable {path.parent.name}/{path.name} in {self.uri}: {exc}"
            ) from exc

    def _write_json(self, path, obj) -> None:
        text = json.dumps(obj, indent=2, default=str)
        if path.protocol == "file":
            # Temp file + rename: a crash mid-write leaves the old pointer, not half a new one.
            # (An S3 PUT is all or nothing by itself.)
            path.parent.mkdir(parents=True, exist_ok=True)
            local = path.path
            tmp = f"{local}.tmp-{os.getpid()}"
            with open(tmp, "w") as fh:
                fh.write(text)
            os.replace(tmp, local)
        else:
            path.write_text(text)

    def current_pointer(self, symbol):
        return self._read_json(self._dir(symbol) / "current.json")

    def last_attempt(self, symbol):
        return self._read_json(self._dir(symbol) / "last_attempt.json")

    def metadata(self, symbol, version) -> dict:
        meta = self._read_json(self._dir(symbol, version) / "metadata.json")
        if meta is None:
            raise FileNotFoundError(f"no model {version} for {symbol} in {self.uri}")
        return meta

    def versions(self, symbol) -> list[str]:
        d = self._dir(symbol)
        try:
            return sorted(p.name for p in d.iterdir() if p.is_dir())
        # On s3:// a prefix with no objects under it is no directory at all: universal_pathlib
        # raises NotADirectoryError there, where file:// raises FileNotFoundError.
        except (FileNotFoundError, NotADirectoryError):
            return []

    def load(self, symbol, version):
        """The model, or ModelUnavailable saying why not (a half-deleted or corrupt model is never guessed at)."""
        import keras

        if version in self._loaded:
            return self._loaded[version]
        where = f"{self.uri}/{symbol}/{version}"
        try:
            meta = self.metadata(symbol, version)
            data = (self._dir(symbol, version) / "model.keras").read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if meta.get("artifact_sha256", digest) != digest:
                raise ValueError(
                    f"model.keras sha256 {digest[:12]}... differs from its metadata's "
                    f"{meta['artifact_sha256'][:12]}... (replaced or damaged)"
                )
            with tempfile.TemporaryDirectory(prefix="cf-model-") as tmp:
                path = os.path.join(tmp, "model.keras")
                with open(path, "wb") as fh:
                    fh.write(data)
                model = keras.models.load_model(path, compile=False)
            scaler = Scaler.from_dict(meta["scaler"])
        except FileNotFoundError as exc:
            raise ModelUnavailable(f"model {version} missing from {where}: {exc}") from exc
        except (
            Exception
        ) as exc:  # Keras/zip/JSON errors of a damaged file: all mean "can't serve this"
            raise ModelUnavailable(
                f"model {version} unreadable at {where}: {type(exc).__name__}: {exc}"
            ) from exc
        trained = TrainedModel(model, scaler, meta)
        self._loaded[version] = trained
        return trained

    def save(self, trained, status, reason):
        d = self._dir(trained.symbol, trained.version)
        if d.protocol == "file":
            d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="cf-model-") as tmp:
            path = os.path.join(tmp, "model.keras")
            trained.model.save(path)
            with open(path, "rb") as fh:
                blob = fh.read()
            (d / "model.keras").write_bytes(blob)
        # The store's own URI, not str(path): that would carry the connection id as s3://conn@bucket.
        artifact = f"{self.uri}/{trained.symbol}/{trained.version}/model.keras"
        trained.metadata["artifact_uri"] = artifact
        trained.metadata["artifact_sha256"] = hashlib.sha256(blob).hexdigest()  # checked on load
        trained.metadata["status"] = status
        self._write_json(d / "metadata.json", trained.metadata)
        self._write_json(
            self._dir(trained.symbol) / "last_attempt.json", _attempt(trained, status, reason)
        )
        self._loaded[trained.version] = trained
        if self.conn is not None:
            self._index(trained, status, reason, artifact)
        return artifact

    def set_current(self, trained, reason):
        previous = _or_none(self.current_pointer, trained.symbol)
        self._write_json(self._dir(trained.symbol) / "current.json", _pointer(trained, reason))
        if self.conn is not None:
            if previous and previous["version"] != trained.version:
                self._status(previous["version"], "retired", f"replaced by {trained.version}")
            self.conn.execute(
                "UPDATE forecast.model_versions SET status = 'promoted', status_reason = %s,"
                " promoted_at = now() WHERE version = %s",
                (reason, trained.version),
            )
            self.conn.commit()

    def clear_current(self, symbol, reason):
        previous = _or_none(self.current_pointer, symbol)
        (self._dir(symbol) / "current.json").unlink(missing_ok=True)
        if self.conn is not None and previous:
            self._status(previous["version"], "retired", reason)
            self.conn.commit()

    def put_attempt(self, symbol, attempt):
        self._write_json(self._dir(symbol) / "last_attempt.json", attempt)

    def _status(self, version, status, reason):
        self.conn.execute(
            "UPDATE forecast.model_versions SET status = %s, status_reason = %s WHERE version = %s",
            (status, reason, version),
        )

    def _index(self, trained, status, reason, artifact):
        m = trained.metadata
        dw = m["data_window"]
        self.conn.execute(
            "INSERT INTO forecast.model_versions (version, symbol, architecture, artifact_uri, trained_at,"
            " train_start, train_end, hyperparameters, metrics, baseline_metrics, code_version, status, status_reason)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (version) DO UPDATE SET artifact_uri = EXCLUDED.artifact_uri, metrics = EXCLUDED.metrics,"
            " baseline_metrics = EXCLUDED.baseline_metrics, status = EXCLUDED.status, status_reason = EXCLUDED.status_reason",
            (
                m["version"],
                m["symbol"],
                m["architecture"],
                artifact,
                m["trained_at"],
                dw["train_start"],
                dw["cut"],
                json.dumps(m["hyperparameters"]),
                json.dumps(m["metrics"]),
                json.dumps(m["baseline_metrics"]),
                m.get("code_version"),
                "candidate" if status == "promoted" else status,
                reason,
            ),
        )
        self.conn.commit()
