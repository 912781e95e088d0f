"""Reviewing a change as GitOps users do: what each environment would apply, compared object by
object between two environments (`make diff FROM= TO=`) or two Git revisions (`make diff BASE=`).
"""
