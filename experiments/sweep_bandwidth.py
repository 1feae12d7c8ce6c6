"""Time to train against the per-GPU scale-up bandwidth, plan re-optimized at every point.

Measures: for one config, the best plan and time to train on the Passage fabric preset (512-GPU
domain) with ``scale_up.bandwidth_GB_s`` (per GPU, per direction) set to each value, the gain
per doubling, and the knee with its reason from the step breakdown.

    python experiments/sweep_bandwidth.py --config config4 --values 200 400 900 2000 3200 6400
"""

from sweep_domain import run

if __name__ == "__main__":
    run("bandwidth", __doc__, lambda study: study.assumptions["bandwidths_GB_s"]["value"])
