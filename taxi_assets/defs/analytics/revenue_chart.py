"""The picture of `fct_monthly_zone_revenue`: revenue and trips per month, by borough and
service type, as a PNG the UI shows in the asset's metadata."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

# Per month, borough and service type, summed over the mart's zones.
CHART_SQL = """
select revenue_month, coalesce(revenue_borough, '(no zone)') as borough, service_type,
       sum(revenue_monthly_total_amount) as revenue, sum(total_monthly_trips) as trips
from {relation}
group by 1, 2, 3
"""
COLUMNS = ["revenue_month", "borough", "service_type", "revenue", "trips"]


def chart_png(rows: Sequence[tuple]) -> bytes:
    """Stacked bars per month, a colour per borough: revenue above, trips below, a column per
    service type."""
    # Imported here: every run process loads the code location, and only this asset draws
    # (matplotlib costs half a second of each process's start).
    import matplotlib

    matplotlib.use("Agg")  # no display: runs draw into files
    import matplotlib.pyplot as plt

    totals = pd.DataFrame(list(rows), columns=COLUMNS)
    totals["revenue_month"] = pd.to_datetime(totals["revenue_month"]).dt.strftime("%Y-%m")
    services = sorted(totals["service_type"].unique()) or ["(no trips)"]
    boroughs = sorted(totals["borough"].unique())
    colours = dict(zip(boroughs, plt.get_cmap("tab10").colors))
    figure, axes = plt.subplots(
        2, len(services), figsize=(5 * len(services) + 1, 7), squeeze=False, sharex="col"
    )
    for column, service in enumerate(services):
        of_service = totals[totals["service_type"] == service]
        for row, (measure, label) in enumerate((("revenue", "revenue ($)"), ("trips", "trips"))):
            table = of_service.pivot_table(
                index="revenue_month", columns="borough", values=measure, aggfunc="sum"
            ).fillna(0)
            axis = axes[row][column]
            if not table.empty:
                table.plot.bar(
                    ax=axis,
                    stacked=True,
                    legend=False,
                    color=[colours[b] for b in table.columns],
                    rot=0,
                )
            axis.set_title(f"{service}: {label} per month")
            axis.set_xlabel("")
            axis.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[b]) for b in boroughs]
    figure.legend(handles, boroughs, loc="center right", title="pickup borough")
    figure.tight_layout(rect=(0, 0, 0.82, 1))
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=80)
    plt.close(figure)
    return out.getvalue()


def chart_markdown(png: bytes) -> str:
    """The PNG inline, as the UI renders a markdown metadata value's image."""
    encoded = base64.b64encode(png).decode()
    return f"![revenue and trips per month by borough and service type](data:image/png;base64,{encoded})"


def save_chart(png: bytes, path: Path) -> Path:
    """The PNG in a file too (replaced whole), for the console and for viewers outside the UI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_bytes(png)
    part.replace(path)
    return path
