"""Shipped constants fitted by ``calibrate`` (generated file: do not edit by hand).

Regenerate with ``python experiments/fit_shipped_constants.py`` (docs/calibration.md), which
runs ``cpo-opt calibrate --prior physical`` on the public fit sets and writes this module.
:func:`cpo_opt.model.constants.constants_for` applies these values over the physical defaults
and ``GENERATION_DEFAULTS``, and under any user constants table.
"""

VALUES: dict[str, dict[str, float]] = {'ampere': {'gemm_eff_bf16': 0.7041862259654905},
 'blackwell': {'clock_fraction': 0.8547961110077777},
 'hopper': {'clock_fraction': 0.7428300530424266}}
"""``{level: {constant: value}}`` (SI units), levels as in a constants file."""

INTERVALS: dict[str, dict[str, tuple[float, float]]] = {'ampere': {'gemm_eff_bf16': (0.6741525692318135, 0.732549866423301)},
 'blackwell': {'clock_fraction': (0.7990460162019052, 0.9144359355761953)},
 'hopper': {'clock_fraction': (0.6974841890267538, 0.7911240088079597)}}
"""``{level: {constant: (low, high)}}``: the 90% Laplace intervals of the fit."""

ABOUT: dict[str, object] = {'after': {'max_abs_error': 0.2021208285987257,
           'mean_abs_error': 0.06081538425469129,
           'median_abs_error': 0.04618430771826454},
 'before': {'max_abs_error': 0.269604519706064,
            'mean_abs_error': 0.11015923548836755,
            'median_abs_error': 0.07898143136853597},
 'cases_files': ['cpo_opt/data/megatron-a100.toml',
                 'cpo_opt/data/moe-fit.toml',
                 'cpo_opt/data/dense-fit.toml'],
 'command': 'python experiments/fit_shipped_constants.py',
 'cross_validation': {'max_abs_error': 0.25314799686555123,
                      'mean_abs_error': 0.06940802727228851,
                      'median_abs_error': 0.04790774330826464,
                      'method': 'leave-one-out',
                      'rms_log_error': 0.09082830828015111,
                      'within_level_correlation': 0.0},
 'fit': ['ampere:gemm_eff_bf16',
         'hopper:clock_fraction',
         'hopper:small_kernel_s',
         'blackwell:clock_fraction',
         'blackwell:small_kernel_s'],
 'method': 'gauss-newton',
 'n_cases': 31}
"""What produced the values: command, cases files, fitted names, errors."""
