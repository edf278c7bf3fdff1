"""What the classes of a labelling are: :class:`ClassMap`. Public through :mod:`prostate_fast.label`.

One object says, for every source of labels, how the pathologist's marks map to class indices:
the names (index 0 is the negative class), the marker colour of each class in a painted copy, the
severity order that settles a tile reached by several classes, the polygon names (with
:data:`DEFAULT_ALIASES` understood without configuration) and the label-mask codes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import AnnotationError

__all__ = ["DEFAULT_ALIASES", "MASK_SCHEMES", "ClassMap", "scheme_codes"]

RGB = tuple[int, int, int]
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")

#: Polygon names understood without configuration (compared lower-case), mapped to ``cancer``
#: when the class map has it, and to the negative class (index 0).
DEFAULT_ALIASES: dict[str, str] = {
    **dict.fromkeys(
        "cancer tumor tumour carcinoma adenocarcinoma malignant metastasis metastases _0 _1".split(),
        "cancer",
    ),
    **dict.fromkeys(
        "benign normal non-cancer noncancer non-tumor non-tumour healthy".split(), "<negative>"
    ),
}

#: Label-mask code schemes (``--mask-scheme``): what each code means, see :func:`scheme_codes`.
MASK_SCHEMES = {
    "prostate-fast": "0 nothing, 1 the negative class, 2, 3, ... the positive classes (default)",
    "panda-radboud": "PANDA Radboud: 0 nothing, 1 stroma and 2 benign epithelium -> the negative "
    "class, 3/4/5 Gleason 3/4/5 -> gleason3/gleason4/gleason5 when those classes exist, else cancer",
    "panda-karolinska": "PANDA Karolinska: 0 nothing, 1 benign -> the negative class, 2 cancer",
}


def scheme_codes(scheme: str, names: Sequence[str]) -> dict[int, str | None] | None:
    """Mask code -> class name (None: nothing) of a :data:`MASK_SCHEMES` scheme for the classes
    ``names`` (index 0 negative); None for ``prostate-fast`` (the default map).

    Raises
    ------
    ValueError
        An unknown scheme, or classes the scheme cannot map onto (no ``cancer`` class, and for
        ``panda-radboud`` not every one of gleason3/4/5 either).
    """
    if scheme not in MASK_SCHEMES:
        raise ValueError(f"mask scheme must be one of {sorted(MASK_SCHEMES)}, got {scheme!r}")
    if scheme == "prostate-fast":
        return None
    lower = {n.lower(): n for n in names[1:]}
    base: dict[int, str | None] = {0: None, 1: names[0]}
    grades = [lower.get(f"gleason{g}") for g in (3, 4, 5)]
    if scheme == "panda-radboud":
        if all(grades):
            return {**base, 2: names[0], 3: grades[0], 4: grades[1], 5: grades[2]}
        if "cancer" in lower:
            return {**base, 2: names[0], **dict.fromkeys((3, 4, 5), lower["cancer"])}
        raise ValueError("--mask-scheme panda-radboud needs --classes with 'cancer' or with "
                         f"gleason3, gleason4 and gleason5; got {list(names[1:])}")  # fmt: skip
    if "cancer" in lower:
        return {**base, 2: lower["cancer"]}
    raise ValueError(f"--mask-scheme {scheme} needs a 'cancer' class; got {list(names[1:])}")


def _rgb(name: str, value: object) -> RGB:
    try:
        r, g, b = (int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"colour of {name!r} must be three integers, got {value!r}") from None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"colour of {name!r} must be in [0, 255], got {value!r}")
    return r, g, b


@dataclass(frozen=True, eq=False)
class ClassMap:
    """The classes of a labelling: names, marker colours, severity, polygon names, mask codes.

    Build with :meth:`create` (or :meth:`parse` for the CLI's ``--classes`` string).

    Attributes
    ----------
    names : tuple of str
        Class names; index 0 is the negative class (tiles no other class reaches).
    colours : tuple of (R, G, B) or None
        Marker colour of each class in a painted copy (None: not painted).
    order : tuple of int
        Positive class indices, most severe first: when several classes reach the rule, the first
        of them in this order wins.
    aliases : dict
        Lower-case polygon name -> class index, or None to ignore polygons of that name.
        ``"unclassified"`` is the key of polygons without a class.
    codes : dict
        Label-mask code -> class index, or None for codes that mark nothing (glass).
    """

    names: tuple[str, ...]
    colours: tuple[RGB | None, ...]
    order: tuple[int, ...]
    aliases: dict[str, int | None]
    codes: dict[int, int | None]

    @classmethod
    def create(
        cls,
        classes: Mapping[str, Sequence[int] | None] | Sequence[str] | None = None,
        *,
        negative: str = "benign",
        order: Sequence[str] | None = None,
        aliases: Mapping[str, str | None] | None = None,
        codes: Mapping[int, str | None] | None = None,
    ) -> ClassMap:
        """Build a class map.

        Parameters
        ----------
        classes : mapping name -> (R, G, B) or None, or sequence of names
            The positive classes, most severe first unless ``order`` says otherwise (default
            ``{"cancer": (0, 255, 0)}``, the study's green).
        negative : str
            Name of class 0 (default "benign").
        order : sequence of str, optional
            Every positive class, most severe first.
        aliases : mapping, optional
            Polygon name (case-insensitive) -> class name, or None/"ignore" to skip such polygons.
            Added to :data:`DEFAULT_ALIASES` (``Tumor``, ``Carcinoma``, Camelyon ``_0``/``_1`` ->
            cancer; ``Normal``, ``Benign`` -> the negative class). Polygons without a class
            ("unclassified") go to the only positive class when there is one; with several,
            map them here or they are an error.
        codes : mapping, optional
            Mask code -> class name, or None for "nothing" (default: 0 nothing, 1 the negative
            class, 2, 3, ... the positive classes in the order given).

        Raises
        ------
        ValueError
            A bad or duplicate name, colour, alias target, order or code.
        """
        if classes is None:
            classes = {"cancer": (0, 255, 0)}
        pos = dict(classes) if isinstance(classes, Mapping) else dict.fromkeys(classes)
        names = (negative, *pos)
        for n in names:
            if not isinstance(n, str) or not _NAME.match(n):
                raise ValueError(f"class names must be letters, digits or _.+- only, got {n!r}")
        if len({n.lower() for n in names}) != len(names):
            raise ValueError(f"class names must be distinct (case-insensitive), got {names}")
        if len(names) < 2:
            raise ValueError("give at least one positive class")
        colours = (None, *(None if v is None else _rgb(k, v) for k, v in pos.items()))
        index = {n.lower(): i for i, n in enumerate(names)}
        if order is None:
            rank = tuple(range(1, len(names)))
        else:
            rank = tuple(index.get(str(o).lower(), -1) for o in order)
            if sorted(rank) != list(range(1, len(names))):
                raise ValueError(f"order must list every positive class once: {names[1:]}")
        return cls(names, colours, rank, _alias_map(names, aliases), _code_map(names, codes))

    @classmethod
    def parse(
        cls,
        spec: str,
        *,
        negative: str = "benign",
        order: str | None = None,
        aliases: str | None = None,
        codes: str | None = None,
        scheme: str | None = None,
    ) -> ClassMap:
        """Build from CLI strings: ``"cancer=0,255,0;gleason4=0,0,255"`` (a name without
        ``=`` has no colour), ``order="gleason4,cancer"``, ``aliases="Tumor=cancer;Stroma=ignore"``,
        ``codes="0=ignore,1=benign,2=cancer"`` or a ``scheme`` of :data:`MASK_SCHEMES` (not both).
        """
        classes: dict[str, RGB | None] = {}
        for part in filter(None, (s.strip() for s in spec.split(";"))):
            name, _, colour = part.partition("=")
            classes[name.strip()] = _rgb(name, colour.split(",")) if colour.strip() else None
        al: dict[str, str | None] = {}
        for part in filter(None, (s.strip() for s in (aliases or "").split(";"))):
            key, eq, target = part.partition("=")
            if not eq:
                raise ValueError(f"alias {part!r} must be NAME=CLASS or NAME=ignore")
            al[key.strip()] = target.strip()
        ordr = [s.strip() for s in order.split(",")] if order else None
        cd: dict[int, str | None] | None = None
        if codes:
            cd = {}
            for part in filter(None, (s.strip() for s in codes.split(","))):
                code, eq, target = part.partition("=")
                if not eq or not code.strip().isdigit():
                    raise ValueError(f"mask code {part!r} must be CODE=CLASS or CODE=ignore")
                cd[int(code)] = target.strip()
        if scheme is not None:
            if codes:
                raise ValueError("give --mask-codes or --mask-scheme, not both")
            cd = scheme_codes(scheme, (negative, *classes))
        return cls.create(classes, negative=negative, order=ordr, aliases=al, codes=cd)

    def resolve(self, name: str | None, path: object) -> int | None:
        """Class index of a polygon name (None: ignored); AnnotationError for an unknown one."""
        key = "unclassified" if name is None else name.strip().lower()
        if key in self.aliases:
            return self.aliases[key]
        what = "unclassified polygons" if name is None else f"class name {name!r}"
        raise AnnotationError(
            f"{path}: {what} not in the class map {list(self.names)}; map it with "
            f"--class-alias '{name or 'unclassified'}=CLASS' (or =ignore)"
        )


def _alias_map(
    names: tuple[str, ...], aliases: Mapping[str, str | None] | None
) -> dict[str, int | None]:
    """Lower-case polygon name -> class index (None: ignored); see :meth:`ClassMap.create`."""
    index = {n.lower(): i for i, n in enumerate(names)}
    al: dict[str, int | None] = {}
    for key, target in DEFAULT_ALIASES.items():
        if target == "<negative>":
            al[key] = 0
        elif target in index:
            al[key] = index[target]
    if len(names) == 2:
        al["unclassified"] = 1
    al.update({n.lower(): i for i, n in enumerate(names)})
    for key, target in (aliases or {}).items():
        if target is None or str(target).lower() in ("ignore", "none"):
            al[str(key).lower()] = None
        elif str(target).lower() in index:
            al[str(key).lower()] = index[str(target).lower()]
        else:
            raise ValueError(f"alias {key!r} -> {target!r}: no such class in {names}")
    return al


def _code_map(
    names: tuple[str, ...], codes: Mapping[int, str | None] | None
) -> dict[int, int | None]:
    """Label-mask code -> class index (None: marks nothing); see :meth:`ClassMap.create`."""
    if codes is None:
        return {0: None, **{i + 1: i for i in range(len(names))}}
    index = {n.lower(): i for i, n in enumerate(names)}
    cd: dict[int, int | None] = {}
    for code, target in codes.items():
        if not isinstance(code, int | np.integer) or code < 0:
            raise ValueError(f"mask codes must be integers >= 0, got {code!r}")
        t = None if target is None else str(target).lower()
        if t is not None and t not in ("ignore", "none") and t not in index:
            raise ValueError(f"mask code {code} -> {target!r}: no such class in {names}")
        cd[int(code)] = None if t in (None, "ignore", "none") else index[t]
    return cd
