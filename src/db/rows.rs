//! Many rows in one statement: `INSERT … VALUES (…), (…)`, bound by position.

use super::{Backend, DbResult};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

/// Parameters per statement: a few hundred, so a statement binds quickly and stays
/// far below every engine's parameter limit.
pub(super) const PARAMETERS_PER_STATEMENT: usize = 700;

/// `(…), (…)` for `rows` rows of `cols` parameters. SQLite gets anonymous `?`s, bound
/// by position: it resolves every numbered `$N` by a linear search of the names seen
/// so far, when preparing and again when binding, which made half of a SQLite import's
/// CPU `strncmp` at 700 parameters per statement. PostgreSQL has only `$N`.
fn placeholders(backend: Backend, rows: usize, cols: usize) -> String {
    placeholders_after(backend, rows, cols, 0)
}

/// [`placeholders`] numbered from `$first + 1` on PostgreSQL, for a statement whose
/// first `first` parameters come before the rows.
pub(super) fn placeholders_after(backend: Backend, rows: usize, cols: usize, first: usize) -> String {
    let mut sql = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 1..=cols {
            if c > 1 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(itoa::Buffer::new().format(first + r * cols + c));
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// Inserts `rows` into `into` (`table (columns)`), `cols` parameters per row bound by
/// `bind`, followed by `tail` (e.g. an `ON CONFLICT` clause), in statements of bounded
/// size. Full-size statements repeat the same text, so each connection prepares it once.
pub(super) async fn insert_rows<T>(
    backend: Backend,
    conn: &mut AnyConnection,
    into: &str,
    tail: &str,
    cols: usize,
    rows: &[T],
    bind: impl for<'q> Fn(Query<'q, Any, AnyArguments<'q>>, &'q T) -> Query<'q, Any, AnyArguments<'q>>,
) -> DbResult<()> {
    let per_statement = PARAMETERS_PER_STATEMENT / cols;
    let statement = |n| format!("INSERT INTO {into} VALUES {} {tail}", placeholders(backend, n, cols));
    let full = statement(per_statement);
    for chunk in rows.chunks(per_statement) {
        let last;
        let sql = if chunk.len() == per_statement {
            full.as_str()
        } else {
            last = statement(chunk.len());
            last.as_str()
        };
        let mut q = sqlx::query(sql).persistent(chunk.len() == per_statement);
        for row in chunk {
            q = bind(q, row);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{placeholders, Backend};

    #[test]
    fn placeholders_number_the_parameters_row_by_row_on_postgres_and_are_positional_on_sqlite() {
        assert_eq!(placeholders(Backend::Postgres, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(Backend::Postgres, 1, 1), "($1)");
        assert_eq!(placeholders(Backend::Sqlite, 2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(super::placeholders_after(Backend::Postgres, 2, 2, 3), "($4, $5), ($6, $7)");
    }
}
