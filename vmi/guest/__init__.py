"""The bundled guest: a small Linux-2.6.16-style kernel and its user programs.

``build_guest(macros)`` assembles the boot ROM, the kernel (with one of the
macro sets) and the vsyscall page; ``boot(machine, ...)`` loads them with a
workload of user programs into a ``Machine`` and returns a ``Guest`` that
runs it and reads the kernel's counters. See docs/guest.md.
"""

from vmi.guest.build import MACRO_SETS, PROGRAMS, GuestBuild, Image, build_guest, user_program
from vmi.guest.loader import DEFAULT_WORKLOAD, Guest, boot

__all__ = ["DEFAULT_WORKLOAD", "MACRO_SETS", "PROGRAMS", "Guest", "GuestBuild", "Image", "boot",
           "build_guest", "user_program"]
