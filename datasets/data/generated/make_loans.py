"""A generated loan-default file of 250,000 rows in a shape none of the public files here has.

``python datasets/data/generated/make_loans.py OUT.csv [ROWS] [SEED]`` writes it (seeded: the same
arguments give the same bytes). It is generated, not real: its purpose is to exercise
``fairloop init`` and the audit on a large file with

- ';' as separator, latin-1 encoding and accented column names and values (``région``, ``Île-de-France``),
- a header, a row identifier column, a numeric-coded category (``emploi`` 1-5), empty incomes,
- a multi-valued sensitive attribute (``origine``, five groups) whose default rates are small and
  several-fold apart (2.5 % vs 10 %): the absolute gap stays under 0.10, the ratio is 0.25,
- a second sensitive attribute (``sexe``) with almost equal rates.

Defaults depend on income, amount, duration and employment through a logistic model, and on
``origine`` only through the intercept, so a model can learn something and the groups differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

ORIGINS = {  # group: (share of rows, default rate the intercept aims at)
    "France": (0.62, 0.025), "UE": (0.12, 0.03), "Maghreb": (0.12, 0.10),
    "Afrique subsaharienne": (0.08, 0.09), "Autre": (0.06, 0.05),
}
REGIONS = ["Île-de-France", "Auvergne-Rhône-Alpes", "Provence-Alpes-Côte d'Azur", "Hauts-de-France", "Bretagne", "Occitanie"]


def make_loans(rows: int = 250_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = list(ORIGINS)
    origin = rng.choice(names, size=rows, p=[ORIGINS[n][0] for n in names])
    age = rng.integers(18, 80, size=rows)
    employment = rng.choice([1, 2, 3, 4, 5], size=rows, p=[0.5, 0.2, 0.12, 0.1, 0.08])  # 1 CDI ... 5 sans emploi
    income = np.round(rng.lognormal(mean=7.6, sigma=0.45, size=rows), 2)
    amount = np.round(rng.lognormal(mean=9.3, sigma=0.7, size=rows), -1)
    duration = rng.choice([12, 24, 36, 48, 60, 84], size=rows)
    burden = amount / duration / income
    base = np.array([ORIGINS[o][1] for o in origin])
    logit = np.log(base / (1 - base)) + 1.2 * (burden - burden.mean()) / burden.std() * 0.5 + 0.25 * (employment - 1)
    logit -= 0.25 * (employment.mean() - 1)
    default = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({
        "dossier": np.arange(100_001, 100_001 + rows),
        "âge": age,
        "sexe": rng.choice(["F", "M"], size=rows),
        "origine": origin,
        "région": rng.choice(REGIONS, size=rows),
        "emploi": employment,
        "revenu": income,
        "montant": amount,
        "durée": duration,
        "défaut": default.astype(int),
    })
    frame.loc[rng.random(rows) < 0.02, "revenu"] = np.nan  # incomes nobody declared: empty fields
    return frame


def write_loans(path: str | Path, rows: int = 250_000, seed: int = 0) -> Path:
    path = Path(path)
    make_loans(rows, seed).to_csv(path, sep=";", index=False, encoding="latin-1")
    return path


if __name__ == "__main__":
    out = write_loans(sys.argv[1], *(int(a) for a in sys.argv[2:4]))
    print(f"wrote {out}")
