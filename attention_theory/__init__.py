"""Attention estimators and their theory (built in a later issue)."""
