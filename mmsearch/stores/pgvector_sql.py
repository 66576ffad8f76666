"""The SQL side of the PostgreSQL + pgvector store: table layout, typed attribute
columns and the translation of parsed filter trees (mmsearch.stores.filters) into SQL.

Per collection (registry row id N): `mmsearch_cN_items` (one row per item, tombstones
included: states, counts, what hits show) and `mmsearch_cN_points` (one row per passage of
a live item: its vector, BM25 text and every filterable field, so a filtered search reads one
table). Filterable fields are real columns with btree (GIN for arrays) indexes, so the planner
can take an exact index path for selective filters instead of walking the HNSW graph.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from psycopg import sql

from mmsearch.stores.base import AttributeValue, FieldKind, Metric
from mmsearch.stores.filters import ATTRIBUTE_PREFIX, AllOf, AnyOf, Condition, FilterNode, Not

REGISTRY = "mmsearch_collections"
ALIASES = "mmsearch_aliases"
# Full-text configuration: no stemming, no stop words, lowercase (as the embedded store's BM25).
TS_CONFIG = "simple"
# Text is split into words at ASCII punctuation before PostgreSQL's parser sees it (as the
# embedded store's word tokenizer does): the parser otherwise reads "INV-2024-00731" as 'inv',
# '-2024', '-00731' (signed numbers) and "a@b.com" as one e-mail token, so a query for "00731"
# or "b.com" found nothing. Letters of any script are kept. `{}` is the text expression.
WORDS_SQL = "regexp_replace({}, '[[:punct:]]+', ' ', 'g')"
# Serialises collection DDL across processes (two indexer replicas starting at once).
ADMIN_LOCK = 0x6D6D73656172  # "mmsear"
# Class of the (class, table id) advisory lock held while one process builds a collection's HNSW index.
BUILD_LOCK_CLASS = 0x6D6D73
# pgvector indexes `vector` columns of at most this many dimensions with HNSW.
HNSW_MAX_DIM = 2000

SQL_TYPE: Mapping[FieldKind, str] = {
    "keyword": "text",
    "keyword_list": "text[]",
    "int": "bigint",
    "float": "double precision",
    "bool": "boolean",
    "datetime": "timestamptz",
}
OPS: Mapping[Metric, tuple[str, str]] = {  # metric -> (distance operator, HNSW operator class)
    "cosine": ("<=>", "vector_cosine_ops"),
    "dot": ("<#>", "vector_ip_ops"),
    "euclidean": ("<->", "vector_l2_ops"),
}
# Columns of the points table that mirror core filter fields.
CORE_COLUMNS = ("item_id", "modality", "tags", "source", "created_at", "event_time")
_SAFE = re.compile(r"[a-z0-9_]{1,40}")


def items_table(table_id: int) -> sql.Identifier:
    return sql.Identifier(f"mmsearch_c{table_id}_items")


def points_table(table_id: int) -> sql.Identifier:
    return sql.Identifier(f"mmsearch_c{table_id}_points")


def attribute_column(name: str) -> str:
    """A declared attribute's column: readable when the name is, else a hash (identifiers are
    at most 63 bytes and case-folded by careless tools)."""
    if _SAFE.fullmatch(name):
        return f"a_{name}"
    return f"a_h{hashlib.sha256(name.encode()).hexdigest()[:24]}"


def typed_attribute(value: AttributeValue, kind: FieldKind) -> Any:
    """The value for a declared attribute's typed column; None (no match for any filter) when
    the value is not of the declared kind. The JSON copy keeps it as written either way."""
    if kind == "keyword":
        return value if isinstance(value, str) else None
    if kind == "keyword_list":
        return [value] if isinstance(value, str) else None
    if kind == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else None  # type: ignore[arg-type]
    if kind == "bool":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, datetime) else None


def backfill_expression(name: str, kind: FieldKind) -> sql.Composable:
    """SQL computing a newly declared attribute's typed value from items.attributes (jsonb)."""
    key = sql.Literal(name)
    raw = sql.SQL("(i.attributes ->> {})").format(key)
    typeof = sql.SQL("jsonb_typeof(i.attributes -> {})").format(key)
    if kind == "keyword":
        return sql.SQL("CASE WHEN {t} = 'string' THEN {r} END").format(t=typeof, r=raw)
    if kind == "keyword_list":
        return sql.SQL("CASE WHEN {t} = 'string' THEN ARRAY[{r}] END").format(t=typeof, r=raw)
    if kind == "int":
        return sql.SQL("CASE WHEN {t} = 'number' AND {r} ~ '^-?[0-9]+$' THEN {r}::bigint END").format(
            t=typeof, r=raw
        )
    if kind == "float":
        return sql.SQL("CASE WHEN {t} = 'number' THEN {r}::double precision END").format(t=typeof, r=raw)
    if kind == "bool":
        return sql.SQL("CASE WHEN {t} = 'boolean' THEN {r}::boolean END").format(t=typeof, r=raw)
    return sql.SQL("CASE WHEN {k} = ANY(i.attribute_datetimes) THEN {r}::timestamptz END").format(
        k=key, r=raw
    )


def create_tables(
    table_id: int,
    *,
    dimension: int,
    metric: Metric,
    attributes: Mapping[str, FieldKind],
    m: int,
    ef: int,
    with_hnsw: bool = True,
) -> list[sql.Composed]:
    items, points = items_table(table_id), points_table(table_id)
    attr_columns = sql.SQL("").join(
        sql.SQL(", {} {}").format(sql.Identifier(attribute_column(n)), sql.SQL(SQL_TYPE[k]))
        for n, k in attributes.items()
    )
    statements: list[sql.Composed] = [
        sql.SQL(
            "CREATE TABLE {items} (uid uuid PRIMARY KEY, tenant text NOT NULL, item_id text NOT NULL, "
            "modality text NOT NULL, version bigint NOT NULL, event_time timestamptz NOT NULL, "
            "content_sha256 text NOT NULL, deleted boolean NOT NULL, model_version text NOT NULL, "
            "text text NOT NULL, title text NOT NULL, tags text[] NOT NULL, source text NOT NULL, "
            "source_uri text NOT NULL, created_at timestamptz, attributes jsonb NOT NULL, "
            "attribute_datetimes text[] NOT NULL, snippet text NOT NULL, thumbnail bytea NOT NULL, "
            "generation text NOT NULL, passages integer NOT NULL)"
        ).format(items=items),
        sql.SQL("CREATE INDEX ON {items} (tenant) WHERE NOT deleted").format(items=items),
        sql.SQL(
            "CREATE TABLE {points} (uid uuid NOT NULL, passage integer NOT NULL, tenant text NOT NULL, "
            "item_id text NOT NULL, modality text NOT NULL, tags text[] NOT NULL, source text NOT NULL, "
            "created_at timestamptz, event_time timestamptz NOT NULL, generation text NOT NULL, "
            "has_passage boolean NOT NULL, start_at integer NOT NULL, end_at integer NOT NULL, "
            "passage_text text NOT NULL, bm25 text NOT NULL, "
            "tsv tsvector GENERATED ALWAYS AS (to_tsvector({cfg}, " + WORDS_SQL.format("bm25") + ")) STORED, "
            "embedding vector({dim}), tokens bytea NOT NULL{attrs}, PRIMARY KEY (uid, passage))"
        ).format(
            points=points,
            cfg=sql.Literal(TS_CONFIG),
            dim=sql.SQL(str(int(dimension))),
            attrs=attr_columns,
        ),
        sql.SQL("CREATE INDEX ON {} USING gin (tsv)").format(points),
        sql.SQL("CREATE INDEX ON {} USING gin (tags)").format(points),
    ]
    for column in ("modality", "source", "item_id", "created_at", "event_time"):
        statements.append(sql.SQL("CREATE INDEX ON {} (tenant, {})").format(points, sql.Identifier(column)))
    if with_hnsw and dimension <= HNSW_MAX_DIM:
        statements.append(hnsw_index(table_id, metric, m, ef))
    for name, kind in attributes.items():
        statements.append(attribute_index(table_id, name, kind))
    return statements


def hnsw_index_name(table_id: int) -> sql.Identifier:
    return sql.Identifier(f"mmsearch_c{table_id}_hnsw")


def hnsw_index(table_id: int, metric: Metric, m: int, ef: int, *, concurrently: bool = False) -> sql.Composed:
    """The HNSW index of a points table; CONCURRENTLY builds it without blocking writes (and
    must run outside a transaction)."""
    return sql.SQL(
        "CREATE INDEX {how} IF NOT EXISTS {name} ON {points} USING hnsw (embedding {ops}) "
        "WITH (m = {m}, ef_construction = {ef})"
    ).format(
        how=sql.SQL("CONCURRENTLY" if concurrently else ""),
        name=hnsw_index_name(table_id),
        points=points_table(table_id),
        ops=sql.SQL(OPS[metric][1]),
        m=sql.Literal(m),
        ef=sql.Literal(ef),
    )


def attribute_index(table_id: int, name: str, kind: FieldKind) -> sql.Composed:
    column = sql.Identifier(attribute_column(name))
    if kind == "keyword_list":
        return sql.SQL("CREATE INDEX ON {} USING gin ({})").format(points_table(table_id), column)
    return sql.SQL("CREATE INDEX ON {} (tenant, {})").format(points_table(table_id), column)


# ---------------------------------------------------------------------------------------------------
# Filters


def _column(cond: Condition) -> sql.Composable:
    if cond.field.startswith(ATTRIBUTE_PREFIX):
        return sql.SQL("p.{}").format(sql.Identifier(attribute_column(cond.field[len(ATTRIBUTE_PREFIX) :])))
    assert cond.field in CORE_COLUMNS, cond.field
    return sql.SQL("p.{}").format(sql.Identifier(cond.field))


def _condition(cond: Condition, params: list[Any]) -> sql.Composable:
    column = _column(cond)
    kind = cond.kind
    scalar = "text" if kind == "keyword_list" else SQL_TYPE[kind]
    if cond.op in ("eq", "in"):
        values = [float(v) if kind == "float" else v for v in cond.values]  # type: ignore[arg-type]
        params.append(values)
        if kind == "keyword_list":
            return sql.SQL("{} && %s::text[]").format(column)
        return sql.SQL("{} = ANY(%s::{}[])").format(column, sql.SQL(scalar))
    parts: list[sql.Composable] = []
    for name, op in (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")):
        bound = getattr(cond, name)
        if bound is not None:
            params.append(float(bound) if kind == "float" else bound)
            parts.append(sql.SQL("{} {} %s::{}").format(column, sql.SQL(op), sql.SQL(scalar)))
    return sql.SQL(" AND ").join(parts)


def filter_sql(node: FilterNode, params: list[Any], negated: bool = False) -> sql.Composable:
    """The tree as a boolean SQL expression over the points table (alias p). A missing field
    makes a condition false, so its negation is true (the contract's semantics): under a NOT, a
    condition on a nullable column is wrapped in coalesce(..., false). Elsewhere NULL already
    acts as false (AND / OR / WHERE are monotone), and the bare condition keeps its index usable."""
    if isinstance(node, Condition):
        condition = _condition(node, params)
        nullable = node.field.startswith(ATTRIBUTE_PREFIX) or node.field == "created_at"
        return sql.SQL("coalesce(({}), false)").format(condition) if negated and nullable else condition
    if isinstance(node, Not):
        return sql.SQL("(NOT {})").format(filter_sql(node.node, params, not negated))
    joiner = " AND " if isinstance(node, AllOf) else " OR "
    assert isinstance(node, AllOf | AnyOf)
    return sql.SQL("({})").format(sql.SQL(joiner).join(filter_sql(n, params, negated) for n in node.nodes))
