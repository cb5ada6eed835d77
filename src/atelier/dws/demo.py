"""The dws suite's step of `atelier demo`: no database needed.

A bundled csv (built deterministically by `build_sample`) whose first column, the key a
table created without DISTRIBUTE BY would get, is a status code: the offline path shows
it piling rows onto a few DNs and recommends the even, high-cardinality key instead.
"""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path

from rich.console import Console

from atelier.dws.analyze import SkewConfig, skew
from atelier.dws.render import skew_table

SAMPLE = "orders_sample.csv"


def build_sample(path: str | Path, rows: int = 20000, seed: int = 7) -> None:
    """status (first column, 3 values), order_id (unique), customer, region, amount."""
    rng = random.Random(seed)
    lines = ["status,order_id,customer,region,amount"]
    for i in range(rows):
        status = rng.choices(["done", "open", "void"], weights=[80, 15, 5])[0]
        lines.append(
            f"{status},{100000 + i},cust{rng.randint(1, 4000):05d},"
            f"{rng.choice(['north', 'south', 'east', 'west'])},{rng.randint(100, 99999) / 100:.2f}"
        )
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(out: str | Path, nodes: int = 6) -> None:
    console = Console()
    sample = resources.files("atelier.dws.assets") / SAMPLE
    console.rule("[bold]dws skew: offline, bundled orders_sample.csv")
    report = skew(SkewConfig(file=str(sample), nodes=nodes, replicate_below=0))
    skew_table(report, console)
    out = Path(out) / "dws"
    out.mkdir(parents=True, exist_ok=True)
    from atelier.core.atomic import write_text_atomic
    from atelier.dws.render import to_json

    write_text_atomic(out / "skew.json", to_json(report.to_json()))
    console.print(f"report: {out / 'skew.json'}")


if __name__ == "__main__":
    build_sample(Path(__file__).parent / "assets" / SAMPLE)
