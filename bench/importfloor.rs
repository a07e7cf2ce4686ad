//! The import floor (SQLite): the least work that stores the same rows as
//! `POST /api/projects/{id}/import` of tasks with one annotation each.
//!
//! Reads a rows file (one task per line: its data JSON, a tab, its annotation's result
//! JSON; both compact, so neither holds a tab or a newline) and, in one transaction on a
//! database that labelport created and migrated, inserts for every batch one multi-row
//! `INSERT` into `tasks`, one into `annotations` and one into `annotation_changes` (the
//! rows an import writes), with the ids a fresh database gives them. No HTTP, no JSON
//! parsing, no staging tables. Prints the seconds from opening the database to the
//! commit on stdout.
//!
//! Built by bench/run.sh with `rustc -O -l sqlite3` against the system's libsqlite3 (the
//! few functions used are declared below; no cargo dependencies).
//! Usage: importfloor <db> <rows> <project_id> <user_id> [batch]
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::Instant;

#[allow(non_camel_case_types)]
type sqlite3 = c_void;
#[allow(non_camel_case_types)]
type sqlite3_stmt = c_void;

extern "C" {
    fn sqlite3_open(filename: *const c_char, db: *mut *mut sqlite3) -> c_int;
    fn sqlite3_close(db: *mut sqlite3) -> c_int;
    fn sqlite3_errmsg(db: *mut sqlite3) -> *const c_char;
    fn sqlite3_exec(
        db: *mut sqlite3,
        sql: *const c_char,
        cb: *const c_void,
        arg: *mut c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    fn sqlite3_prepare_v2(
        db: *mut sqlite3,
        sql: *const c_char,
        n: c_int,
        stmt: *mut *mut sqlite3_stmt,
        tail: *mut *const c_char,
    ) -> c_int;
    fn sqlite3_bind_int64(stmt: *mut sqlite3_stmt, i: c_int, v: i64) -> c_int;
    fn sqlite3_bind_text(stmt: *mut sqlite3_stmt, i: c_int, v: *const c_char, n: c_int, free: isize) -> c_int;
    fn sqlite3_step(stmt: *mut sqlite3_stmt) -> c_int;
    fn sqlite3_reset(stmt: *mut sqlite3_stmt) -> c_int;
    fn sqlite3_finalize(stmt: *mut sqlite3_stmt) -> c_int;
}
const SQLITE_OK: c_int = 0;
const SQLITE_DONE: c_int = 101;
/// `SQLITE_STATIC`: the text outlives the statement's use of it.
const STATIC: isize = 0;

struct Db(*mut sqlite3);

impl Db {
    fn check(&self, rc: c_int, what: &str) {
        if rc != SQLITE_OK && rc != SQLITE_DONE {
            // SAFETY: the handle is open; sqlite3_errmsg returns a NUL-terminated string.
            let msg = unsafe { CStr::from_ptr(sqlite3_errmsg(self.0)) };
            panic!("{what}: {}", msg.to_string_lossy());
        }
    }

    fn exec(&self, sql: &str) {
        let sql = CString::new(sql).unwrap();
        // SAFETY: valid handle and NUL-terminated SQL; no callback.
        let rc =
            unsafe { sqlite3_exec(self.0, sql.as_ptr(), std::ptr::null(), std::ptr::null_mut(), std::ptr::null_mut()) };
        self.check(rc, "exec");
    }

    fn prepare(&self, sql: &str) -> *mut sqlite3_stmt {
        let sql = CString::new(sql).unwrap();
        let mut stmt = std::ptr::null_mut();
        // SAFETY: valid handle, NUL-terminated SQL, out pointer to a local.
        let rc = unsafe { sqlite3_prepare_v2(self.0, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut()) };
        self.check(rc, "prepare");
        stmt
    }

    /// Binds `params` (in order) to `stmt`, runs it once and resets it.
    fn run(&self, stmt: *mut sqlite3_stmt, params: &[Param]) {
        for (i, p) in params.iter().enumerate() {
            let i = i as c_int + 1;
            // SAFETY: `stmt` is a live statement; text is bound SQLITE_STATIC and stays
            // alive (it borrows the rows buffer) until the statement is reset below.
            let rc = unsafe {
                match p {
                    Param::Int(v) => sqlite3_bind_int64(stmt, i, *v),
                    Param::Text(s) => sqlite3_bind_text(stmt, i, s.as_ptr().cast(), s.len() as c_int, STATIC),
                }
            };
            self.check(rc, "bind");
        }
        // SAFETY: as above.
        let rc = unsafe { sqlite3_step(stmt) };
        self.check(rc, "step");
        // SAFETY: as above.
        unsafe { sqlite3_reset(stmt) };
    }
}

/// Frees statements that are not used again.
fn finalize(stmts: [*mut sqlite3_stmt; 3]) {
    for stmt in stmts {
        // SAFETY: a statement prepared on the open handle and not used after this.
        unsafe { sqlite3_finalize(stmt) };
    }
}

enum Param<'a> {
    Int(i64),
    Text(&'a str),
}

/// `INSERT INTO <head> VALUES <row>, <row>, …` for `rows` rows.
fn multi_row(head: &str, row: &str, rows: usize) -> String {
    format!("INSERT INTO {head} VALUES {}", vec![row; rows].join(", "))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: importfloor <db> <rows> <project_id> <user_id> [batch]");
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&args[2]).expect("rows file");
    let rows: Vec<(&str, &str)> = text.lines().map(|l| l.split_once('\t').expect("data<TAB>result")).collect();
    let project: i64 = args[3].parse().expect("project id");
    let user: i64 = args[4].parse().expect("user id");
    let batch: usize = args.get(5).and_then(|b| b.parse().ok()).unwrap_or(500).max(1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;

    let started = Instant::now();
    let path = CString::new(args[1].as_str()).unwrap();
    let mut handle = std::ptr::null_mut();
    // SAFETY: NUL-terminated path, out pointer to a local.
    let rc = unsafe { sqlite3_open(path.as_ptr(), &mut handle) };
    let db = Db(handle);
    db.check(rc, "open");
    // labelport's connection settings (src/db/mod.rs); the file is already in WAL mode.
    db.exec("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
    db.exec("BEGIN IMMEDIATE");
    // Fresh database: ids and inner ids continue from what is there (nothing).
    db.exec(&format!("UPDATE projects SET next_inner_id = next_inner_id + {} WHERE id = {project}", rows.len()));
    let task_row = format!("(?, {project}, ?, '{{}}', ?, 1, 1, 0, 0, {now}, {now})");
    let ann_row = format!(
        "(?, ?, {project}, ?, 0, 0, NULL, {user}, {user}, NULL, 'imported', 1, NULL, NULL, NULL, {now}, {now})"
    );
    let change_row = format!("({project}, ?, ?, 'upsert', {now})");
    let task_head = "tasks (id, project_id, data, meta, inner_id, is_labeled, total_annotations, \
                     cancelled_annotations, total_predictions, created_at, updated_at)";
    let ann_head = "annotations (id, task_id, project_id, result, was_cancelled, ground_truth, lead_time, \
                    completed_by, updated_by, import_id, last_action, bulk_created, parent_prediction, \
                    parent_annotation, draft_created_at, created_at, updated_at)";
    let change_head = "annotation_changes (project_id, task_id, annotation_id, op, created_at)";
    let mut prepared: Option<(usize, [*mut sqlite3_stmt; 3])> = None;
    for (b, chunk) in rows.chunks(batch).enumerate() {
        if prepared.map(|(n, _)| n) != Some(chunk.len()) {
            if let Some((_, stmts)) = prepared {
                finalize(stmts);
            }
            prepared = Some((
                chunk.len(),
                [
                    db.prepare(&multi_row(task_head, &task_row, chunk.len())),
                    db.prepare(&multi_row(ann_head, &ann_row, chunk.len())),
                    db.prepare(&multi_row(change_head, &change_row, chunk.len())),
                ],
            ));
        }
        let [tasks, anns, changes] = prepared.unwrap().1;
        let first = (b * batch) as i64 + 1;
        let ids = (first..).zip(chunk);
        let p: Vec<Param> =
            ids.clone().flat_map(|(id, (data, _))| [Param::Int(id), Param::Text(data), Param::Int(id)]).collect();
        db.run(tasks, &p);
        let p: Vec<Param> =
            ids.clone().flat_map(|(id, (_, result))| [Param::Int(id), Param::Int(id), Param::Text(result)]).collect();
        db.run(anns, &p);
        let p: Vec<Param> = ids.flat_map(|(id, _)| [Param::Int(id), Param::Int(id)]).collect();
        db.run(changes, &p);
    }
    if let Some((_, stmts)) = prepared {
        finalize(stmts);
    }
    db.exec("COMMIT");
    let elapsed = started.elapsed().as_secs_f64();
    // SAFETY: every statement is finalized.
    unsafe { sqlite3_close(db.0) };
    println!("{elapsed:.6}");
}
