"""lm-evaluation-harness model type ``nara``: any nara dLLM (with adapters) inside ``lm_eval``.

lm-eval 0.4 finds models by import (``@register_model``), not by an entry-point group, so the
``nara`` model exists once this module is imported. Two ways to use it:

    nara-lm-eval --model nara --model_args pretrained=tiny,adapter=out/adapter --tasks ...
    python -c "import nara.evaluation.lm_eval_model as m; m.main()" --model nara ...

``generate_until`` runs nara's sampler; ``loglikelihood`` uses nara's Monte-Carlo estimate of
log p(continuation | context) (a lower bound, LLaDA's estimator). Rolling loglikelihood
(perplexity tasks) is not defined for masked diffusion and raises.
"""

from __future__ import annotations

from typing import Any

import lm_eval.models  # noqa: F401  (registers the built-in models first; see get_model)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from nara.evaluation.runner import GenerationSettings, make_generate_fn


@register_model("nara")
class NaraLM(LM):
    """lm-eval wrapper around a nara diffusion LM.

    model_args (all optional): pretrained ("tiny", a folder or a hub name), adapter (a folder
    saved by nara or PEFT), gen_length, steps, block_length, temperature, remasking, cfg_scale,
    threshold, cache (none, prefix, dual), cache_tolerance, sampler (llada, dream, mdlm; default:
    the model family's), top_p, top_k, alg_temp (Dream's sampler), mc_samples (Monte-Carlo samples per loglikelihood request), batch_size, device, dtype,
    chat_template (auto: contexts get the model's prompt template, its tokenizer's chat
    template or the embedded model's Question/Answer format, as in nara's training; never: sent
    as they are, e.g. with lm-eval's own --apply_chat_template).
    In code, pass ``model``, ``tokenizer`` and ``mask_token_id`` directly instead of
    ``pretrained``.
    """

    def __init__(
        self,
        pretrained: str = "tiny",
        adapter: str | None = None,
        *,
        gen_length: int = 128,
        steps: int | None = None,
        block_length: int | None = None,
        temperature: float = 0.0,
        remasking: str = "low_confidence",
        cfg_scale: float = 0.0,
        threshold: float | None = None,
        cache: str | None = None,
        cache_tolerance: float | None = None,
        sampler: str | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        alg_temp: float | None = None,
        mc_samples: int = 64,
        batch_size: int | str = 8,
        device: str | None = None,
        dtype: str | None = None,
        model: Any = None,
        tokenizer: Any = None,
        mask_token_id: int | None = None,
        chat_template: str = "auto",
        **unused: Any,
    ) -> None:
        super().__init__()
        # checked before a model loads: a bad setting costs no load
        settings = GenerationSettings(
            steps=int(steps) if steps else None,
            block_length=int(block_length) if block_length else None,
            temperature=float(temperature),
            remasking=remasking,
            cfg_scale=float(cfg_scale),
            threshold=None if threshold is None else float(threshold),
            cache=None if cache in (None, "none") else cache,
            cache_tolerance=None if cache_tolerance is None else float(cache_tolerance),
            chat_template=chat_template,
            sampler=sampler or None,
            top_p=None if top_p is None else float(top_p),
            top_k=None if top_k is None else int(top_k),
            alg_temp=None if alg_temp is None else float(alg_temp),
        )
        if model is None:
            from nara.models import load_model

            loaded = load_model(pretrained, dtype=dtype, device=device)
            model, tokenizer, mask_token_id = loaded.model, loaded.tokenizer, loaded.mask_token_id
            if adapter:
                from nara.adapters import load_adapters

                model = load_adapters(model, adapter)
        if tokenizer is None or mask_token_id is None:
            raise ValueError(
                "NaraLM needs a tokenizer and a mask token id: load a model folder that ships a "
                "tokenizer, or pass tokenizer=... and mask_token_id=..."
            )
        self.model, self.tokenizer, self.mask_token_id = model.eval(), tokenizer, mask_token_id
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        self.mc_samples = int(mc_samples)
        self.default_gen_length = int(gen_length)
        self.chat_template = chat_template
        self._generate = make_generate_fn(
            model, tokenizer, mask_token_id=mask_token_id, settings=settings
        )

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Generate for each (context, {until, max_gen_toks}) and cut at the first stop string."""
        out: list[str] = []
        for start in tqdm(range(0, len(requests), self.batch_size), disable=disable_tqdm):
            batch = [r.args for r in requests[start : start + self.batch_size]]
            length = max(int(kw.get("max_gen_toks", self.default_gen_length)) for _, kw in batch)
            texts = self._generate([context for context, _ in batch], length)
            for (_, kwargs), text in zip(batch, texts):
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else until
                cut = min((i for s in until if (i := text.find(s)) >= 0), default=len(text))
                out.append(text[:cut])
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Monte-Carlo log p(continuation | context); is_greedy is always False (a masked
        diffusion model has no left-to-right greedy decode to compare with)."""
        from nara.data.collate import encode_prompt, uses_chat_template
        from nara.diffusion import log_likelihood

        templated = uses_chat_template(self.tokenizer, self.chat_template)
        prompts, answers = [], []
        for request in requests:
            context, continuation = request.args
            if templated:  # the context as the model's prompt, the continuation as its answer
                prompt = encode_prompt(self.tokenizer, context, chat_template=self.chat_template)
                answer = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
                prompts.append(prompt)
                answers.append(answer or [self.tokenizer.eos_token_id])
                continue
            whole = self.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
            prefix = self.tokenizer(context, add_special_tokens=False)["input_ids"]
            split = min(len(prefix), len(whole) - 1)  # keep at least one answer token
            prompts.append(whole[:split])
            answers.append(whole[split:])
        scores = log_likelihood(
            self.model,
            prompts,
            answers,
            mask_token_id=self.mask_token_id,
            n_samples=self.mc_samples,
            batch_size=self.batch_size,
        )
        return [(float(s), False) for s in scores]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            "loglikelihood_rolling (perplexity tasks) is not defined for masked diffusion models; "
            "use generate_until or loglikelihood (multiple-choice) tasks with --model nara"
        )


def main() -> None:
    """``lm_eval``'s command line with the ``nara`` model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
