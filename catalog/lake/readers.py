"""How engines that are not blockhub find the lake: the Iceberg catalog, as each reads it.

The lake's tables live in one Iceberg SQL catalog (pyiceberg's ``SqlCatalog``, whose tables
are those of Iceberg's Java ``JdbcCatalog``) under the catalog name ``blockhub`` and the
namespace ``blockhub``.  Any engine that speaks that catalog — pyiceberg and what reads
through it (Ray Data, Daft, polars), Spark and Trino through Iceberg's JDBC catalog — reads
the same tables, snapshots and delete files the hub does.  The catalog name is part of every
table's row in the catalog database: an engine that names its catalog otherwise sees no
tables, which is why the name is spelled out here once.

Passwords are never printed (``blockhub lake catalog`` writes these out): a URL's password
is left out and the text says where to supply it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

from catalog.errors import ConfigError

CATALOG_NAME = "blockhub"
NAMESPACE = "blockhub"
PASSWORD_ENV = "PYICEBERG_CATALOG__BLOCKHUB__URI"


@dataclass(frozen=True)
class LakeCatalog:
    """Where the lake is, as an outside reader needs it.

    ``uri`` is the SQLAlchemy URL of the Iceberg SQL catalog (the hub's
    ``BLOCKHUB_LAKE_CATALOG_URL``), ``warehouse`` where table data lives, ``properties``
    any FileIO properties the lake needs (e.g. ``s3.endpoint``; secrets among them are
    left out of what is printed).
    """

    uri: str
    warehouse: str
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def has_password(self) -> bool:
        return make_url(self.uri).password is not None

    @property
    def public_uri(self) -> str:
        """The catalog URL without its password."""
        if not self.has_password:
            return self.uri
        return make_url(self.uri)._replace(password=None).render_as_string(hide_password=False)

    def table(self, dataset_id: str) -> str:
        """The table identifier of a dataset, as pyiceberg, Ray and Daft name it."""
        return f"{NAMESPACE}.{dataset_id}"

    def pyiceberg_properties(self) -> dict[str, str]:
        """What ``pyiceberg.catalog.load_catalog("blockhub", **props)`` needs (password
        included: for a reader's own process, never printed)."""
        return {"type": "sql", "uri": self.uri, "warehouse": self.warehouse, **self.properties}

    def pyiceberg_yaml(self) -> str:
        """A ``.pyiceberg.yaml`` naming the catalog ``blockhub`` (no password in it)."""
        lines = [
            "# The blockhub lake's Iceberg catalog, for pyiceberg and what reads through it",
            "# (Ray Data, Daft, polars): load_catalog('blockhub'); tables blockhub.<dataset>.",
        ]
        if self.has_password:
            lines.append(f"# The password is not written here: set {PASSWORD_ENV} to the full URL.")
        lines += ["catalog:", f"  {CATALOG_NAME}:", "    type: sql"]
        lines.append(f"    uri: {_yaml_str(self.public_uri)}")
        lines.append(f"    warehouse: {_yaml_str(self.warehouse)}")
        for key, value in sorted(self.properties.items()):
            if _secret(key):
                lines.append(f"    # {key}: not written here (a secret)")
            else:
                lines.append(f"    {key}: {_yaml_str(value)}")
        return "\n".join(lines) + "\n"

    def jdbc(self) -> tuple[str, str | None]:
        """The catalog database as a JDBC URL and its user, for Spark and Trino."""
        url = make_url(self.uri)
        backend = url.get_backend_name()
        if backend not in ("postgresql", "mysql", "mariadb"):
            raise ConfigError(
                "Spark and Trino read the lake through Iceberg's JDBC catalog on a database "
                f"server; the lake catalog here is {backend} ({self.public_uri}): set "
                "BLOCKHUB_LAKE_CATALOG_URL to a PostgreSQL database (docs/operations.md, "
                "'Other engines')",
                setting="BLOCKHUB_LAKE_CATALOG_URL",
            )
        kind = "postgresql" if backend == "postgresql" else "mysql"
        port = f":{url.port}" if url.port else ""
        jdbc = f"jdbc:{kind}://{url.host or 'localhost'}{port}/{url.database or ''}"
        return jdbc, url.username

    def spark_conf(self) -> str:
        """``spark-defaults.conf`` lines: a Spark catalog ``blockhub`` over the same tables."""
        jdbc, user = self.jdbc()
        p = f"spark.sql.catalog.{CATALOG_NAME}"
        lines = [
            "# Spark: the blockhub lake as catalog `blockhub` (tables blockhub.blockhub.<dataset>)",
            "spark.sql.extensions org.apache.iceberg.spark.extensions."
            "IcebergSparkSessionExtensions",
            f"{p} org.apache.iceberg.spark.SparkCatalog",
            f"{p}.type jdbc",
            f"{p}.uri {jdbc}",
            f"{p}.warehouse {self.warehouse}",
            # pyiceberg's SqlCatalog makes the first version of JdbcCatalog's tables.
            f"{p}.jdbc.schema-version V0",
        ]
        if user:
            lines.append(f"{p}.jdbc.user {user}")
        if self.has_password:
            lines.append(f"# {p}.jdbc.password: not written here (a secret)")
        lines += _s3_lines(self, f"{p}.", spark=True)
        return "\n".join(lines) + "\n"

    def trino_properties(self) -> str:
        """A Trino catalog file (``etc/catalog/blockhub.properties``) over the same tables."""
        jdbc, user = self.jdbc()
        pg = jdbc.startswith("jdbc:postgresql")
        driver = "org.postgresql.Driver" if pg else "org.mariadb.jdbc.Driver"
        lines = [
            "# Trino: etc/catalog/blockhub.properties (tables blockhub.blockhub.<dataset>)",
            "connector.name=iceberg",
            "iceberg.catalog.type=jdbc",
            f"iceberg.jdbc-catalog.catalog-name={CATALOG_NAME}",
            f"iceberg.jdbc-catalog.driver-class={driver}",
            f"iceberg.jdbc-catalog.connection-url={jdbc}",
            f"iceberg.jdbc-catalog.default-warehouse-dir={self.warehouse}",
        ]
        if user:
            lines.append(f"iceberg.jdbc-catalog.connection-user={user}")
        if self.has_password:
            lines.append("# iceberg.jdbc-catalog.connection-password: not written here (a secret)")
        if self.warehouse.startswith("s3://"):
            lines.append("fs.native-s3.enabled=true")
        lines += _s3_lines(self, "", spark=False)
        return "\n".join(lines) + "\n"


_SECRET_WORDS = ("secret", "password", "token", "session", "credential")


def _secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS) or key.lower().endswith(
        "access-key-id"
    )


# pyiceberg's FileIO property → (Spark's S3FileIO property, Trino's native S3 property)
_S3_NAMES = {
    "s3.endpoint": ("s3.endpoint", "s3.endpoint"),
    "s3.region": ("client.region", "s3.region"),
    "s3.force-virtual-addressing": ("s3.path-style-access", "s3.path-style-access"),
}


def _s3_lines(cat: LakeCatalog, prefix: str, *, spark: bool) -> list[str]:
    if not cat.warehouse.startswith("s3://"):
        return []
    lines = [f"{prefix}io-impl org.apache.iceberg.aws.s3.S3FileIO"] if spark else []
    for key, value in sorted(cat.properties.items()):
        if key not in _S3_NAMES:
            continue
        name = _S3_NAMES[key][0 if spark else 1]
        if key == "s3.force-virtual-addressing":  # the opposite question
            value = "false" if value.lower() == "true" else "true"
        lines.append(f"{prefix}{name} {value}" if spark else f"{name}={value}")
    lines.append("# S3 access key and secret: not written here (secrets)")
    return lines


def _yaml_str(value: str) -> str:
    """A YAML scalar that reads back as the same string."""
    return "'" + value.replace("'", "''") + "'"
