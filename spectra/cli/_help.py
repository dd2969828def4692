"""How ``--help`` and usage lines present parameters, fixed once for every command.

Typer labels an on/off flag with ``<bool>``, which reads as if ``--mp-fit true`` were accepted (it
is not: a flag takes no value), and writes required arguments as ``{checkpoint}`` in usage lines.
These command and group classes show flags without a type and arguments in the usual
``CHECKPOINT`` / ``[SOURCE]`` / ``INPUTS...`` form, the same form the README uses.
"""

from __future__ import annotations

from typer.core import TyperArgument, TyperCommand, TyperGroup

__all__ = ["SpectraCommand", "HelpGroup", "usage_name"]


def usage_name(param) -> str:
    """``CHECKPOINT`` for a required argument, ``[SOURCE]`` for an optional one, ``INPUTS...`` for many."""
    name = (param.metavar or param.name or "arg").upper()
    if param.nargs != 1:
        name += "..."
    return name if param.required else f"[{name}]"


def _tidy(params: list) -> list:
    for p in params:
        if getattr(p, "is_flag", False) and getattr(p, "metavar", None) is None:
            p.metavar = ""  # a flag takes no value: no type label
        elif isinstance(p, TyperArgument) and p.metavar is None:
            p.metavar = (p.name or "arg").upper()
    return params


class SpectraCommand(TyperCommand):
    """A Typer command whose help shows flags without ``<bool>`` and arguments as ``CHECKPOINT``."""

    def get_params(self, ctx):
        return _tidy(super().get_params(ctx))

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            pieces.extend([usage_name(p)] if isinstance(p, TyperArgument) else p.get_usage_pieces(ctx))
        return pieces


class HelpGroup(TyperGroup):
    """The same presentation for the ``spectra`` group and its sub-groups (``spectra bench``)."""

    def get_params(self, ctx):
        return _tidy(super().get_params(ctx))
