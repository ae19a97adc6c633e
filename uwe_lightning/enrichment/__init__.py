"""Synthetic training data like the paper's (section 4, Appendix B) through any OpenAI-compatible endpoint.

``python -m uwe_lightning.enrich <titles|merge|paraphrases|sentences|all>`` (:mod:`uwe_lightning.cli.enrich`,
``conf/enrich.yaml``): LLM job titles per skill (J), merged into the real vacancy titles by encoder similarity,
paraphrases per skill (A) and vacancy sentences per skill (V), written as edge files that ``data=edges`` and
``data=open_enriched`` train on. Modules: :mod:`~.prompts` (the paper's prompts, answer parsing),
:mod:`~.client` (chat-completions over HTTP: timeouts, retries, backoff), :mod:`~.cache` (one file per answered
request), :mod:`~.generate` (rounds, filters, leakage guard, concurrency), :mod:`~.merge` (similarity merge,
Figure 5), :mod:`~.pipeline` (the steps and their files), :mod:`~.devserver` (a local chat-completions server
for tests and demonstrations: deterministic rules, no model).
"""
