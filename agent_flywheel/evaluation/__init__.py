"""Judging candidates: the tool-calling metrics, judge-reply parsing, bootstrap intervals, NeMo Evaluator
results, and the promotion gate that decides which candidate may replace the teacher."""
