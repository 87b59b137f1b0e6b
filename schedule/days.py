"""Dates as day numbers (days since 1970-01-01, float64 with NaN for no date) so that whole columns add, compare
and reduce with numpy, and back to the warehouse's naive-midnight date columns."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

NO_DAY = np.nan


def day_numbers(values: pd.Series) -> np.ndarray:
    """Naive dates (or datetimes, taken at their date) as day numbers; NaN where there is no date."""
    stamps = pd.to_datetime(values)
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_localize(None)
    raw = stamps.to_numpy(dtype="datetime64[ns]")
    days = raw.astype("datetime64[D]").astype(np.int64).astype(np.float64)
    days[np.isnat(raw)] = NO_DAY
    return days


def local_day_numbers(values: pd.Series, zone: str) -> np.ndarray:
    """Instants (UTC, or naive meaning UTC) as the day numbers of their date in `zone`; NaN where missing."""
    stamps = pd.to_datetime(values, utc=True)
    return day_numbers(stamps.dt.tz_convert(zone).dt.tz_localize(None))


def instants(values: pd.Series) -> np.ndarray:
    """Instants as int64 microseconds since the epoch, for ordering."""
    return pd.to_datetime(values, utc=True).to_numpy(dtype="datetime64[us]").astype(np.int64)


def day_number(day: date) -> float:
    """One date as its day number."""
    return float(np.datetime64(day, "D").astype(np.int64))


def as_dates(days: np.ndarray) -> np.ndarray:
    """Day numbers back to naive-midnight datetime64[us] values, NaT where NaN."""
    missing = np.isnan(days)
    whole = np.where(missing, 0, days).astype(np.int64).astype("datetime64[D]").astype("datetime64[us]")
    whole[missing] = np.datetime64("NaT")
    return whole
