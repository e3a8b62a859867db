"""Evaluation: bits per byte, continuation log-likelihoods, one file per benchmark task.

`tasks.run_task` is the entry point; `record.provenance` describes where a
number came from. Nothing is imported here, so `import stlm.evaluation.bpb`
stays cheap.
"""
