"""The relations a piece of SQL nobody compiled from models reads.

``RawSQL``, ``extra()`` fragments and custom expressions are text: the only
way to see what they read is to read them. The reading here is deliberately
conservative. It accepts a relation only where it can name it: a bare or
quoted identifier after ``FROM``/``JOIN``/a comma of a ``FROM`` list that is
exactly a known table. Anything it cannot vouch for is an answer of its own,
a reason not to cache: an unknown or schema-qualified relation, a function
outside a short list of built-ins that read no table (a SQL function may
select from anything), a string whose end depends on the database's escaping,
a second statement. A false alarm costs a cache miss; a missed relation would
serve stale rows.
"""

from __future__ import annotations

import re
from collections.abc import Container

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<comment>--[^\n]*(?:\n|$)|/\*(?![!]).*?\*/)
    |(?P<string>[EeNnBbXx]?'[^']*(?:''[^']*)*')
    |(?P<quoted>"[^"]*(?:""[^"]*)*"|`[^`]*(?:``[^`]*)*`)
    |(?P<param>%s|%\(\w+\)s|%%|\?|\$\d+)
    |(?P<word>[^\W\d][\w$]*)
    |(?P<number>\d[\w.]*)
    |(?P<punct>::|[(),.;]|[^\s\w'"`$\\])
    """,
    re.S | re.X,
)

#: functions (and type names written like calls) that compute from their
#: arguments only: never read a table. Volatile ones (now(), random()) are
#: refused elsewhere; anything not listed may be a SQL function over a table.
SAFE_FUNCTIONS = frozenset(
    """
    abs acos asin atan atan2 avg bit_and bit_length bit_or bit_xor bool_and bool_or btrim
    cardinality cast ceil ceiling char char_length character character_length chr coalesce
    concat concat_ws cos cot count cume_dist date date_part date_trunc datetime decimal
    degrees dense_rank div every exp extract first_value float floor format greatest
    group_concat hex ifnull iif initcap instr interval json json_agg json_array
    json_array_elements json_array_elements_text json_array_length json_build_array
    json_build_object json_each json_each_text json_extract json_extract_path
    json_extract_path_text json_group_array json_group_object json_object json_object_agg
    json_quote json_tree json_type json_valid jsonb_agg jsonb_array_elements
    jsonb_array_elements_text jsonb_array_length jsonb_build_array jsonb_build_object
    jsonb_each jsonb_each_text jsonb_extract_path jsonb_extract_path_text jsonb_object_agg
    jsonb_typeof julianday lag last_value lead least left length ln log log10 lower lpad
    ltrim max md5 min mod nth_value ntile nullif numeric octet_length overlay percent_rank
    pi position pow power printf quote radians rank regexp_replace regexp_split_to_array
    repeat replace reverse right round row_number rpad rtrim sign sin split_part sqrt
    stddev stddev_pop stddev_samp strftime string_agg strpos substr substring sum tan
    time timestamp timestamptz to_char to_json to_jsonb translate trim trunc typeof
    unicode upper var_pop var_samp variance varchar array_agg array_length array_to_string
    generate_series unnest generate_subscripts regexp_split_to_table string_to_table
    jsonb_to_recordset json_to_recordset
    """.split()
)

#: of those, the ones that may stand in a FROM list (set-returning, no table)
TABLE_FUNCTIONS = frozenset(
    """
    generate_series unnest generate_subscripts regexp_split_to_table string_to_table
    json_each json_each_text json_tree json_array_elements json_array_elements_text
    jsonb_each jsonb_each_text jsonb_array_elements jsonb_array_elements_text
    jsonb_to_recordset json_to_recordset
    """.split()
)

#: words that may precede "(" without being a function call
_NOT_CALLS = frozenset(
    """
    ALL AND ANY ARRAY AS ASC BETWEEN BY CASE DESC DISTINCT ELSE END ESCAPE EXCEPT EXISTS
    FILTER FROM GROUP HAVING IN INTERSECT IS JOIN LATERAL LIKE ILIKE LIMIT NOT OFFSET ON
    OR ORDER OVER PARTITION ROW SELECT SIMILAR SOME THEN TO UNION USING VALUES WHEN WHERE
    WITHIN
    """.split()
)
#: words that end a FROM list
_FROM_END = frozenset(
    "WHERE GROUP HAVING ORDER LIMIT OFFSET UNION INTERSECT EXCEPT WINDOW FETCH FOR "
    "RETURNING QUALIFY SELECT".split()
)
#: words after which a relation name is read (besides FROM and JOIN)
_RELATION_BEFORE = frozenset(("FROM", "JOIN", "TABLE"))
#: words that start statements that write, or run code
_WRITES = frozenset("INSERT UPDATE DELETE MERGE COPY CALL EXEC EXECUTE DO INTO".split())
#: functions inside whose parentheses FROM is part of the call's syntax
_FROM_IN_CALL = frozenset(("extract", "substring", "trim", "overlay", "position"))
_SKIP_BEFORE_RELATION = frozenset(("LATERAL", "ONLY"))
#: words that open a subquery where a relation could stand
_SUBQUERY_START = frozenset(("SELECT", "VALUES", "WITH", "TABLE"))


def scan(sql: str, known: Container[str]) -> tuple[frozenset[str], str | None]:
    """(known tables ``sql`` reads, ``None``) when every relation it may read
    is a known table; else (tables found so far, the reason it may not be cached)."""
    tokens, reason = _tokens(sql)
    if reason is not None:
        return frozenset(), reason
    tables: set[str] = set()
    # one entry per open parenthesis: [inside a FROM list, expecting a relation, call name]
    levels: list[list] = [[False, False, ""]]
    prev: tuple[str, str] = ("", "")
    before_prev: tuple[str, str] = ("", "")
    i, n = 0, len(tokens)
    while i < n:
        kind, text = tokens[i]
        level = levels[-1]
        upper = text.upper() if kind == "word" else ""
        if level[1] and kind == "word" and upper in _SUBQUERY_START:
            # "(" opened a subquery, not a parenthesised FROM item
            level[0] = level[1] = False
        elif level[1] and not (kind == "word" and upper in _SKIP_BEFORE_RELATION):
            level[1] = False
            if kind == "punct" and text == "(":
                # a subquery, or a parenthesised FROM item: "FROM (t1 JOIN t2 ...)"
                levels.append([True, True, ""])
                before_prev, prev = prev, (kind, text)
                i += 1
                continue
            if kind not in ("word", "quoted") or (kind == "word" and upper in _NOT_CALLS):
                return frozenset(tables), f"cannot tell which relation follows {prev[1]!r}"
            parts, i = _dotted(tokens, i)
            if i < n and tokens[i] == ("punct", "("):
                name = parts[-1][1].lower()
                if len(parts) > 1 or parts[0][0] == "quoted" or name not in TABLE_FUNCTIONS:
                    return frozenset(tables), (
                        f"reads from function {_show(parts)}(), which may select from "
                        "relations querystash does not see"
                    )
                levels.append([False, False, name])
                before_prev, prev = prev, ("punct", "(")
                i += 1
                continue
            if len(parts) > 1:
                return frozenset(tables), (
                    f"reads {_show(parts)}, a relation of another schema or database"
                )
            name = _unquote(*parts[0])
            if i < n and tokens[i] == ("punct", "@"):
                return frozenset(tables), f"reads {name!r} through a database link"
            if name not in known:
                return frozenset(tables), (
                    f"reads {name!r}, which no registered model maps (a temporary "
                    "table, a view or a table querystash does not know)"
                )
            tables.add(name)
            before_prev, prev = prev, parts[-1]
            continue
        if kind == "word":
            if upper in _WRITES:
                return frozenset(tables), f"contains {upper}: not a plain read"
            if upper == "FROM":
                in_call = level[2] in _FROM_IN_CALL
                distinct_from = prev[1].upper() == "DISTINCT" and before_prev[1].upper() in (
                    "IS", "NOT",
                )
                if not in_call and not distinct_from:
                    level[0] = level[1] = True
            elif upper in _RELATION_BEFORE:
                level[1] = True
            elif upper in _FROM_END:
                level[0] = False
        elif kind == "punct":
            if text == "(":
                name = ""
                if prev[0] in ("word", "quoted"):
                    if prev[0] == "word" and prev[1].upper() in _NOT_CALLS:
                        pass
                    elif prev[0] == "quoted" or not _safe_call(prev[1].lower()) or (
                        before_prev == ("punct", ".")
                    ):
                        return frozenset(tables), (
                            f"calls {prev[1]}(), which may read relations querystash "
                            "does not see"
                        )
                    else:
                        name = prev[1].lower()
                levels.append([False, False, name])
            elif text == ")":
                levels.pop()
                if not levels:
                    return frozenset(tables), "unbalanced parentheses"
            elif text == "," and level[0]:
                level[1] = True
            elif text == ";":
                return frozenset(tables), "more than one statement"
        before_prev, prev = prev, (kind, text)
        i += 1
    if levels[-1][1]:
        return frozenset(tables), "ends where a relation name should be"
    return frozenset(tables), None


def _safe_call(name: str) -> bool:
    # django_*: the pure Python functions Django registers on SQLite connections
    return name in SAFE_FUNCTIONS or name.startswith("django_")


def _tokens(sql: str) -> tuple[list[tuple[str, str]], str | None]:
    tokens: list[tuple[str, str]] = []
    pos, n = 0, len(sql)
    match = _TOKEN.match
    while pos < n:
        m = match(sql, pos)
        if m is None:
            # a lone quote, a backslash, a "$": where a string or identifier
            # ends (or whether it is one) depends on the database
            return tokens, f"cannot read the SQL at {sql[pos:pos + 20]!r}"
        kind = m.lastgroup
        text = m.group(kind)
        pos = m.end()
        if kind in ("space", "comment", "param", "number"):
            if kind == "comment" and text.startswith("/*") and "/*" in text[2:]:
                return tokens, "nested comment"
            continue
        if kind == "string":
            if "\\" in text:
                # E'..' and MySQL strings end at a different quote than standard ones
                return tokens, "a string literal with a backslash"
            continue
        tokens.append((kind, text))
    return tokens, None


def _dotted(tokens: list[tuple[str, str]], i: int) -> tuple[list[tuple[str, str]], int]:
    """``a``, ``a.b``, ``"a"."b"`` from ``tokens[i]``: (the parts, the index after)."""
    parts = [tokens[i]]
    i += 1
    while (
        i + 1 < len(tokens)
        and tokens[i] == ("punct", ".")
        and tokens[i + 1][0] in ("word", "quoted")
    ):
        parts.append(tokens[i + 1])
        i += 2
    return parts, i


def _unquote(kind: str, text: str) -> str:
    if kind != "quoted":
        return text
    quote = text[0]
    return text[1:-1].replace(quote * 2, quote)


def _show(parts: list[tuple[str, str]]) -> str:
    return ".".join(text for _, text in parts)
