"""lm-eval's command line with the "stlm" model registered.

    python -m stlm.integrations.run_lm_eval --model stlm --model_args path=RUN --tasks TASK ...

lm-eval finds models only in its own registry; importing the adapter adds
"stlm" to it before lm-eval parses its arguments.
"""

from __future__ import annotations


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    import stlm.integrations.lm_eval_adapter  # noqa: F401  (registers the model)

    cli_evaluate()


if __name__ == "__main__":
    main()
