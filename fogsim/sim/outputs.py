"""The run directory: plain files a user reads with pandas, written as each round completes.

* ``scenario.yaml`` — the scenario with every default filled in;
* ``rounds.csv`` — one row per round (global accuracy, traffic, simulated and wall time);
* ``clients.csv`` — one row per sampled device per round (memory, batch, density, traffic);
* ``fog_nodes.csv`` — with fog nodes only: one row per fog node per round (its clients, the
  accuracy of its aggregate, its traffic on the local and the wide-area link, its time);
* ``tiers.csv`` — one row per profile (device tier): the final global model evaluated on the test
  set by the server under each device's last known mask, averaged over the profile's devices
  (each counts once), whether or not they were sampled in the last round; written once, at the
  end of the last round, just before its row reaches ``rounds.csv``;
* ``summary.json`` — totals and one entry per profile (device tier), written at the end.

Each round's rows (in every per-round file) are written and synced together as the round completes (``RunFiles``), so a
crash keeps every finished round. ``tiers.csv`` is replaced atomically; a resumed run removes it
first (it belongs to the last round, which the run has not finished) and writes it again.

``tiers.csv`` columns: ``devices`` of the profile; ``devices_with_mask``, those with a known mask
(devices that never trained, or that never prune, hold none and are not counted);
``masks_evaluated``, the distinct masks evaluated (at most ``TIER_MASKS`` per profile, drawn with
a seeded draw over the profile's devices, so each mask weighs as many devices as hold it);
``devices_evaluated``, the devices holding those masks, over which ``accuracy``, ``loss`` and
``masked_density`` (kept entries of the prunable tensors of the global model under the mask: an
entry the device kept but the global model holds at zero is not counted, so it can be below the
devices' own ``trained_density`` in summary.json) are averaged. A profile
with no device holding a mask has zeros in those three counts and the figures of the global model
unmasked, which is what such a device receives.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from pathlib import Path

from fogsim.errors import FogsimError
from fogsim.sim.reports import CLIENT_COLUMNS, FOG_COLUMNS, INT_COLUMNS, ROUND_COLUMNS, TEXT_COLUMNS, TIER_COLUMNS
from fogsim.numbers import csv_row, json_text

TIERS_FILE = "tiers.csv"
FOG_FILE = "fog_nodes.csv"


class OutputFailed(FogsimError):
    """The run directory cannot be written any more (disk full, quota, removed); finished rounds are intact."""

    exit_code = 1


class RunFiles:
    """The files of one run directory; each round's rows reach both CSV files together or not at all.

    A round's client rows and its round row are each written with one call and synced, client
    rows first: a round is complete when its row is in ``rounds.csv``. If either write fails
    (disk full, say) both files are cut back to where the round began, so a round is never
    half there, and the failure is one ``OutputFailed`` line. Writing and closing are serialised,
    so closing from another thread (an interrupt) never cuts a round in half.
    """

    def __init__(self, out: Path, resolved_scenario: str, fog: bool = False):
        self.out = out
        self._lock = threading.Lock()
        self.fog = None
        try:
            (out / "scenario.yaml").write_text(resolved_scenario)
            self.rounds = self._open(out / "rounds.csv", ROUND_COLUMNS)
            self.clients = self._open(out / "clients.csv", CLIENT_COLUMNS)
            if fog:
                self.fog = self._open(out / FOG_FILE, FOG_COLUMNS)
        except OSError as error:
            raise OutputFailed(f"{out}: cannot write the run directory ({error.strerror})") from None

    @classmethod
    def resume(cls, out: Path, finished: int, fog: bool = False) -> "RunFiles":
        """Go on with ``out``'s files after round ``finished``: later rows (of rounds the checkpoint
        does not hold) are dropped, each file replaced atomically, then rows are appended."""
        files = cls.__new__(cls)
        files.out, files._lock, files.fog = out, threading.Lock(), None
        per_round = [("rounds.csv", ROUND_COLUMNS), ("clients.csv", CLIENT_COLUMNS)]
        if fog:
            per_round.append((FOG_FILE, FOG_COLUMNS))
        try:
            for name, columns in per_round:
                kept = [row for row in read_rows(out / name) if row["round"] <= finished]
                staged = out / f".{name}.resume"
                staged.write_bytes(_csv_text([dict(zip(columns, columns)), *kept], columns))
                os.replace(staged, out / name)
            (out / TIERS_FILE).unlink(missing_ok=True)  # the last round's, rewritten when it is done again
            files.rounds = open(out / "rounds.csv", "ab", buffering=0)
            files.clients = open(out / "clients.csv", "ab", buffering=0)
            if fog:
                files.fog = open(out / FOG_FILE, "ab", buffering=0)
        except (OSError, ValueError, KeyError) as error:
            raise OutputFailed(f"{out}: cannot go on with its CSV files ({error})") from None
        return files

    @staticmethod
    def _open(path: Path, columns: list[str]):
        file = open(path, "wb", buffering=0)  # unbuffered: what write() returned is on disk or it raised
        _write_all(file, _csv_text([dict(zip(columns, columns))], columns))
        return file

    def write_round(self, round_row: dict, client_rows: list[dict], fog_rows: list[dict] = ()) -> None:
        texts = [(self.clients, _csv_text(client_rows, CLIENT_COLUMNS)),
                 (self.rounds, _csv_text([round_row], ROUND_COLUMNS))]
        if self.fog is not None:
            texts.insert(1, (self.fog, _csv_text(list(fog_rows), FOG_COLUMNS)))
        with self._lock:
            if self.rounds.closed:
                raise OutputFailed(f"{self.out}: the run was stopped before round {round_row['round']} was written")
            starts = [file.tell() for file, _ in texts]
            try:
                for file, data in texts:
                    _write_all(file, data)
                    os.fsync(file.fileno())
            except OSError as error:
                for (file, _), start in zip(texts, starts):
                    os.ftruncate(file.fileno(), start)
                    file.seek(start)
                raise OutputFailed(f"{self.out}: round {round_row['round']} could not be written "
                                   f"({error.strerror}); rounds before it are intact") from None

    def write_tiers(self, rows: list[dict]) -> None:
        """Replace ``tiers.csv`` atomically with ``rows`` (``TIER_COLUMNS``), synced."""
        staged = self.out / f".{TIERS_FILE}.partial"
        with self._lock:
            if self.rounds.closed:
                raise OutputFailed(f"{self.out}: the run was stopped before {TIERS_FILE} was written")
            try:
                with open(staged, "wb") as file:
                    _write_all(file, _csv_text([dict(zip(TIER_COLUMNS, TIER_COLUMNS)), *rows], TIER_COLUMNS))
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(staged, self.out / TIERS_FILE)
                _sync_directory(self.out)
            except OSError as error:
                staged.unlink(missing_ok=True)
                raise OutputFailed(f"{self.out}: {TIERS_FILE} could not be written ({error.strerror}); "
                                   "rounds before the last are intact") from None

    def write_summary(self, summary: dict) -> None:
        try:
            (self.out / "summary.json").write_text(json_text(summary))
        except OSError as error:
            raise OutputFailed(f"{self.out}: summary.json could not be written ({error.strerror}); "
                               "every round is in rounds.csv and clients.csv") from None

    def close(self) -> None:
        with self._lock:
            for file in (self.rounds, self.clients, self.fog):
                if file is None:
                    continue
                try:
                    file.close()
                except OSError:
                    pass  # nothing is left buffered: every round was flushed and synced


def _csv_text(rows: list[dict], columns: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.DictWriter(buffer, fieldnames=columns).writerows(csv_row(row) for row in rows)
    return buffer.getvalue().encode()


def _sync_directory(path: Path) -> None:
    """Make a rename inside ``path`` durable (where the file system lets a directory be synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(file, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[file.write(view):]


def read_rows(path: Path) -> list[dict]:
    """The rows of a CSV this module wrote, typed as they were written; an empty cell is a missing key."""
    def typed(column: str, text: str):
        if column in TEXT_COLUMNS:
            return text
        return int(text) if column in INT_COLUMNS else float(text)

    with open(path, newline="") as file:
        text = file.read()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # a row cut by a crash mid-write is not a row
    return [{k: typed(k, v) for k, v in row.items() if v != ""} for row in csv.DictReader(io.StringIO(text))]


def read_run(out: Path) -> tuple[list[dict], list[dict]]:
    """The round rows and client rows of the run directory ``out``."""
    return read_rows(out / "rounds.csv"), read_rows(out / "clients.csv")


def read_fog_nodes(out: Path) -> list[dict]:
    """The rows of ``out``'s ``fog_nodes.csv`` (none for a run without fog nodes)."""
    path = out / FOG_FILE
    return read_rows(path) if path.is_file() else []


def read_tiers(out: Path) -> list[dict]:
    """The rows of ``out``'s ``tiers.csv`` (none when the run has not finished its last round)."""
    path = out / TIERS_FILE
    return read_rows(path) if path.is_file() else []


def summarize(name: str, rounds: list[dict], clients: list[dict], fleet, wall_time_s: float,
              tier_rows: list[dict] = ()) -> dict:
    """Totals of the run and, per profile, what the devices of that tier cost and how well they do.

    ``accuracy`` and ``loss`` per profile are the server's (``tier_rows``, from ``tiers.csv``): the
    final global model under each device's last known mask. ``local_accuracy`` is the devices'
    own: their model after their last local training, averaged over the devices that trained in
    the last round (``None`` when none of them did)."""
    last = rounds[-1] if rounds else {}
    tiers = {}
    for t in fleet.tiers:
        tier = tiers.setdefault(t.profile_name, {"devices": 0, "budget_bytes": t.plan.budget_bytes,
                                                 "target_compression": 1 / t.plan.target_density,
                                                 "start_density": t.plan.start_density})
        tier["devices"] += t.count
    for row in tier_rows:
        if row["profile"] in tiers:
            tiers[row["profile"]].update(accuracy=row.get("accuracy"), loss=row.get("loss"),
                                         devices_with_mask=row["devices_with_mask"],
                                         masks_evaluated=row["masks_evaluated"],
                                         devices_evaluated=row["devices_evaluated"])
    for profile, tier in tiers.items():
        tier.setdefault("accuracy", None)
        ok = [c for c in clients if c["profile"] == profile and not c["failed"]]
        tier["rounds_trained"] = len(ok)
        tier["rounds_failed"] = sum(1 for c in clients if c["profile"] == profile and c["failed"])
        if ok:
            final_round = max(c["round"] for c in ok)
            final = [c for c in ok if c["round"] == final_round]
            tier.update(
                peak_memory_bytes=max(c["peak_memory_bytes"] for c in ok),
                batch_size_min=min(c["batch_size_min"] for c in ok),
                batch_size_max=max(c["batch_size_max"] for c in ok),
                trained_density=sum(c["density"] for c in final) / len(final),
                trained_compression=len(final) / sum(c["density"] for c in final),
                local_accuracy=(sum(c["accuracy"] for c in final) / len(final)
                                if final_round == len(rounds) else None),
                upload_bytes=sum(c["upload_bytes"] for c in ok),
                download_bytes=sum(c["download_bytes"] for c in ok),
                sim_time_s=sum(c["sim_time_s"] for c in ok),
            )
    return {
        "scenario": name,
        "rounds": len(rounds),
        "accuracy": last.get("accuracy"),
        "loss": last.get("loss"),
        "best_accuracy": max((r["accuracy"] for r in rounds), default=None),
        "device_accuracy": last.get("device_accuracy"),
        "global_density": last.get("global_density"),
        "upload_bytes": sum(r["upload_bytes"] for r in rounds),
        "download_bytes": sum(r["download_bytes"] for r in rounds),
        "wan_upload_bytes": sum(r.get("wan_upload_bytes", r["upload_bytes"]) for r in rounds),
        "wan_download_bytes": sum(r.get("wan_download_bytes", r["download_bytes"]) for r in rounds),
        "sim_time_s": sum(r["sim_time_s"] for r in rounds),
        "wall_time_s": wall_time_s,
        "clients_failed": sum(r["clients_failed"] for r in rounds),
        "profiles": tiers,
    }
