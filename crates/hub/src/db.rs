//! A small layer over the two stores for SQL written once: statements with `$n` parameters
//! bound from a slice of [`Arg`]s, rows read by index, and transactions. SQLite
//! transactions begin `IMMEDIATE` (they take the write lock at once, so a read-then-write
//! transaction waits for another writer instead of failing); PostgreSQL ones take advisory
//! locks where the caller asks ([`Tx::lock`]).

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, Row, Sqlite};

use crate::error::HubError;
use crate::store::Store;

/// One statement parameter.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Int(i64),
    Real(f64),
    Text(&'a str),
    /// A text that may be NULL.
    OptText(Option<&'a str>),
}

/// One result row.
pub enum DbRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl DbRow {
    pub fn int(&self, index: usize) -> Result<i64, HubError> {
        Ok(match self {
            DbRow::Sqlite(row) => row.try_get(index)?,
            DbRow::Postgres(row) => row.try_get(index)?,
        })
    }

    pub fn real(&self, index: usize) -> Result<f64, HubError> {
        Ok(match self {
            DbRow::Sqlite(row) => row.try_get(index)?,
            DbRow::Postgres(row) => row.try_get(index)?,
        })
    }

    pub fn text(&self, index: usize) -> Result<String, HubError> {
        Ok(match self {
            DbRow::Sqlite(row) => row.try_get(index)?,
            DbRow::Postgres(row) => row.try_get(index)?,
        })
    }

    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, HubError> {
        Ok(match self {
            DbRow::Sqlite(row) => row.try_get(index)?,
            DbRow::Postgres(row) => row.try_get(index)?,
        })
    }

    pub fn opt_text(&self, index: usize) -> Result<Option<String>, HubError> {
        Ok(match self {
            DbRow::Sqlite(row) => row.try_get(index)?,
            DbRow::Postgres(row) => row.try_get(index)?,
        })
    }
}

macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match *arg {
                Arg::Int(v) => query.bind(v),
                Arg::Real(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
                Arg::OptText(v) => query.bind(v),
            };
        }
        query
    }};
}

impl Store {
    /// Runs one statement outside a transaction; rows affected.
    pub(crate) async fn exec(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, HubError> {
        Ok(match self {
            Store::Sqlite(pool) => bind_all!(sqlx::query::<Sqlite>(sql), args)
                .execute(pool)
                .await?
                .rows_affected(),
            Store::Postgres(pool) => bind_all!(sqlx::query::<Postgres>(sql), args)
                .execute(pool)
                .await?
                .rows_affected(),
        })
    }

    /// Runs one query outside a transaction; every row.
    pub(crate) async fn fetch(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<DbRow>, HubError> {
        Ok(match self {
            Store::Sqlite(pool) => bind_all!(sqlx::query::<Sqlite>(sql), args)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            Store::Postgres(pool) => bind_all!(sqlx::query::<Postgres>(sql), args)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        })
    }

    /// Begins a transaction (on SQLite, holding the write lock from the start).
    pub(crate) async fn begin(&self) -> Result<Tx, HubError> {
        Ok(match self {
            Store::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Store::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }
}

/// `($1, $2), ($3, $4)`: placeholders for `rows` rows of `columns` parameters, numbered
/// from `first`.
pub fn row_placeholders(rows: usize, columns: usize, first: usize) -> String {
    let mut out = String::with_capacity(rows * (columns * 5 + 4));
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for column in 0..columns {
            if column > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(first + row * columns + column).to_string());
        }
        out.push(')');
    }
    out
}

/// `$1, $2, $3`: `count` placeholders numbered from `first`, for an `IN` list.
pub fn list_placeholders(count: usize, first: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A built statement for SQLite: every `$N` becomes an anonymous `?`, in the order of
/// appearance, with the arguments reordered (and repeated) to match. SQLite reads `$N` as a
/// *named* parameter: it looks each name up by a linear scan when it parses, and sqlx asks
/// each parameter's name by another, so a statement of N parameters cost O(N²) (profiled on
/// a worker's 512-parameter inserts: more time than SQLite spent executing them).
fn positional<'a>(sql: &str, args: &[Arg<'a>]) -> (String, Vec<Arg<'a>>) {
    let mut out = String::with_capacity(sql.len());
    let mut ordered = Vec::with_capacity(args.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let arg = after[..digits]
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|index| args.get(index));
        match arg {
            Some(arg) => {
                out.push('?');
                ordered.push(*arg);
            }
            // Not a parameter we hold: left as written.
            None => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    (out, ordered)
}

/// A transaction; rolled back when dropped without [`Tx::commit`].
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// Advisory lock namespaces (PostgreSQL).
pub(crate) const LOCK_INDICATOR: i32 = 0x6167_0001;
pub(crate) const LOCK_FEED: i32 = 0x6167_0002;

impl Tx {
    /// Serialises this transaction with every other one that takes the same lock, until it
    /// ends. PostgreSQL: a transaction-scoped advisory lock on `(namespace, hash(key))`.
    /// SQLite: a no-op, since its transactions hold the one write lock already.
    pub async fn lock(&mut self, namespace: i32, key: &str) -> Result<(), HubError> {
        if let Tx::Postgres(tx) = self {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(namespace)
                .bind(key)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// [`Tx::lock`] on many keys of one namespace, in the order given, in one statement per
    /// 256 keys rather than one round trip each (a worker's batch names up to 256
    /// indicators). Callers pass keys sorted, as every taker of several locks does, so that
    /// two transactions never wait on each other in a cycle.
    pub async fn lock_many(&mut self, namespace: i32, keys: &[&str]) -> Result<(), HubError> {
        let Tx::Postgres(_) = self else {
            return Ok(());
        };
        for chunk in keys.chunks(256) {
            // Projected after the sort, so the locks are taken in the keys' order.
            let sql = format!(
                "SELECT pg_advisory_xact_lock($1, hashtext(v.k)) FROM (VALUES {}) AS v(k, n) \
                 ORDER BY v.n",
                (0..chunk.len())
                    .map(|i| format!("(${}, {i})", i + 2))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Tx::Postgres(tx) = self {
                let mut query = sqlx::query::<Postgres>(sqlx::AssertSqlSafe(sql)).persistent(false);
                query = query.bind(namespace);
                for key in chunk {
                    query = query.bind(*key);
                }
                query.fetch_all(&mut **tx).await?;
            }
        }
        Ok(())
    }

    pub async fn exec(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, HubError> {
        Ok(match self {
            Tx::Sqlite(tx) => bind_all!(sqlx::query::<Sqlite>(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Postgres(tx) => bind_all!(sqlx::query::<Postgres>(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    pub async fn fetch(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<DbRow>, HubError> {
        Ok(match self {
            Tx::Sqlite(tx) => bind_all!(sqlx::query::<Sqlite>(sql), args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            Tx::Postgres(tx) => bind_all!(sqlx::query::<Postgres>(sql), args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        })
    }

    /// Runs a statement built at run time (a multi-row insert, an `IN` list): only
    /// placeholders are built, never values. Not kept as a prepared statement, since its
    /// text varies with the number of rows.
    pub async fn exec_built(&mut self, sql: String, args: &[Arg<'_>]) -> Result<u64, HubError> {
        Ok(match self {
            Tx::Sqlite(tx) => {
                let (sql, args) = positional(&sql, args);
                bind_all!(sqlx::query::<Sqlite>(sqlx::AssertSqlSafe(sql)), &args)
                    .persistent(false)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
            Tx::Postgres(tx) => bind_all!(sqlx::query::<Postgres>(sqlx::AssertSqlSafe(sql)), args)
                .persistent(false)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    /// Like [`Tx::exec_built`], answering the rows.
    pub async fn fetch_built(
        &mut self,
        sql: String,
        args: &[Arg<'_>],
    ) -> Result<Vec<DbRow>, HubError> {
        Ok(match self {
            Tx::Sqlite(tx) => {
                let (sql, args) = positional(&sql, args);
                bind_all!(sqlx::query::<Sqlite>(sqlx::AssertSqlSafe(sql)), &args)
                    .persistent(false)
                    .fetch_all(&mut **tx)
                    .await?
                    .into_iter()
                    .map(DbRow::Sqlite)
                    .collect()
            }
            Tx::Postgres(tx) => bind_all!(sqlx::query::<Postgres>(sqlx::AssertSqlSafe(sql)), args)
                .persistent(false)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        })
    }

    pub async fn commit(self) -> Result<(), HubError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_and_lists() {
        assert_eq!(row_placeholders(2, 3, 1), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(row_placeholders(1, 1, 4), "($4)");
        assert_eq!(list_placeholders(3, 2), "$2, $3, $4");
        assert_eq!(list_placeholders(0, 1), "");
    }

    #[test]
    fn sqlite_statements_get_positional_parameters_in_order() {
        let args = [Arg::Int(10), Arg::Int(20), Arg::Text("a"), Arg::Text("b")];
        let (sql, ordered) = positional(
            "SELECT x FROM t WHERE k IN ($3, $4) AND at >= $1 AND at < $2 OR at = $1 AND p = '$9'",
            &args,
        );
        assert_eq!(
            sql,
            "SELECT x FROM t WHERE k IN (?, ?) AND at >= ? AND at < ? OR at = ? AND p = '$9'"
        );
        let shown: Vec<String> = ordered.iter().map(|a| format!("{a:?}")).collect();
        assert_eq!(
            shown,
            [
                "Text(\"a\")",
                "Text(\"b\")",
                "Int(10)",
                "Int(20)",
                "Int(10)"
            ]
        );
    }
}
