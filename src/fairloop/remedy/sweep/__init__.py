"""Candidate sweeps (``constraints/sweeps/*.yaml``): recipes x constraint templates x bounds.

Every candidate is fitted by the same ``pipeline.fit_model`` a single run uses (so the chosen one is
reproducible from its recipe and template files alone) and selected under the run's policy on
the rows its evaluation mode gives (:mod:`fairloop.remedy.crossfit`): the validation split (holdout),
or out-of-fold predictions over the whole training pool (crossfit, K + 1 fits per candidate).
Selection takes the most accurate candidate that passes every gate; the test split only gives
the final figures. Fitting is the CPU-bound part: the flow runs :func:`run_fit_job` in a
process pool, everything else here is cheap and runs in the flow's process.
"""
