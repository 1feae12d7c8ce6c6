"""Shipped constants fitted by ``calibrate`` (generated file: do not edit by hand).

Regenerate with ``python experiments/fit_shipped_constants.py`` (docs/calibration.md), which
runs ``cpo-opt calibrate --prior physical`` on the public fit sets and writes this module.
:func:`cpo_opt.model.constants.constants_for` applies these values over the physical defaults
and ``GENERATION_DEFAULTS``, and under any user constants table.
"""

VALUES: dict[str, dict[str, float]] = {'ampere': {'gemm_eff_bf16': 0.7269557229131979}}
"""``{level: {constant: value}}`` (SI units), levels as in a constants file."""

INTERVALS: dict[str, dict[str, tuple[float, float]]] = {'ampere': {'gemm_eff_bf16': (0.7118506201771522, 0.7415564790163848)}}
"""``{level: {constant: (low, high)}}``: the 90% Laplace intervals of the fit."""

ABOUT: dict[str, object] = {'after': {'max_abs_error': 0.0841452606495845,
           'mean_abs_error': 0.028961330646401415,
           'median_abs_error': 0.02146441391114584},
 'before': {'max_abs_error': 0.12693316272053023,
            'mean_abs_error': 0.04335200174811763,
            'median_abs_error': 0.03987773952577767},
 'cases_files': ['cpo_opt/data/megatron-a100.toml', 'cpo_opt/data/moe-fit.toml'],
 'command': 'python experiments/fit_shipped_constants.py',
 'cross_validation': {'max_abs_error': 0.0911998903945086,
                      'mean_abs_error': 0.032426549170188564,
                      'median_abs_error': 0.027703389192746064,
                      'method': 'leave-one-out'},
 'fit': ['ampere:gemm_eff_bf16',
         'hopper:hbm_eff',
         'hopper:kernel_overhead_s',
         'hopper:host_launch_s',
         'hopper:host_sync_s',
         'blackwell:hbm_eff',
         'blackwell:kernel_overhead_s',
         'blackwell:host_launch_s',
         'blackwell:host_sync_s'],
 'n_cases': 21}
"""What produced the values: command, cases files, fitted names, errors."""
