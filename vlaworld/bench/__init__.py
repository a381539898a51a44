"""``python -m vlaworld.bench``: chunk latency per stage, FLOPs, world-encoder calls, env throughput (SPEC §10).

One module per job: ``timing`` (warmup, CUDA-event timing, medians), ``stack`` (random-weight models
at named sizes), ``inputs`` and ``stages`` (what one chunk computes, stage by stage), ``chunk``
(eager / compiled / CUDA-graph latency tables), ``flops`` (counted FLOPs and the floor), ``world_calls``
(clips per env step per memory mode), ``env_rate`` (evaluator env-steps/s), ``lazy_render``
(simulation cost with and without lazy rendering), ``report`` (the derived sections), ``cli``.
"""
