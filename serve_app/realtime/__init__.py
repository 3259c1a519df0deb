"""Realtime voice sessions (OpenAI's Realtime API): a session in the ingress, not a modality.

`session` holds a session's config, conversation and pipeline; `audio` the resampling and the
voice activity detection; `secrets` the ephemeral client secrets that browsers connect with.
"""
