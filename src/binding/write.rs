//! The napi side of local writes: `upsert`, `upsertMany` (as row objects,
//! as names and cells, or packed by `lib/rows.js` `pack()`) and
//! `delete`. Each returns the last write's token.

use super::{JsCells, JsKey, JsPacked, JsRow, JsRowList, JsTable, NativeReplicator, OrJs};
use napi::bindgen_prelude::*;
use napi_derive::napi;

#[napi]
impl NativeReplicator {
    /// Write one row; returns the token.
    #[napi(
        catch_unwind,
        ts_args_type = "table: string, row: Record<string, unknown>"
    )]
    pub fn upsert(&mut self, env: Env, table: JsTable, row: JsRow) -> Result<String> {
        self.e(&env)?.upsert(&table.0, vec![row.0]).js(&env)
    }

    /// Write many rows in one transaction; returns the last token.
    #[napi(
        catch_unwind,
        ts_args_type = "table: string, rows: Array<Record<string, unknown>>"
    )]
    pub fn upsert_many(&mut self, env: Env, table: JsTable, rows: JsRowList) -> Result<String> {
        self.e(&env)?.upsert(&table.0, rows.0).js(&env)
    }

    /// Write many rows in one transaction, given as column names once and
    /// a flat array of `columns.length` values per row (`undefined`: that
    /// row does not give the column). Returns the last token.
    #[napi(
        catch_unwind,
        ts_args_type = "table: string, columns: Array<string>, values: Array<unknown>"
    )]
    pub fn upsert_columns(
        &mut self,
        env: Env,
        table: JsTable,
        columns: Vec<String>,
        values: JsCells,
    ) -> Result<String> {
        let rows = values.rows(&columns)?;
        self.e(&env)?
            .upsert_columns(&table.0, &columns, &rows)
            .js(&env)
    }

    /// `upsertColumns` with the values packed by `lib/rows.js`
    /// `pack()` (`upsertMany`: no N-API call per cell).
    #[napi(
        catch_unwind,
        ts_args_type = "table: string, columns: Array<string>, packed: [Uint8Array, Float64Array, string, unknown[]]"
    )]
    pub fn upsert_packed(
        &mut self,
        env: Env,
        table: JsTable,
        columns: Vec<String>,
        packed: JsPacked,
    ) -> Result<String> {
        let rows = packed.rows(&columns)?;
        self.e(&env)?
            .upsert_columns(&table.0, &columns, &rows)
            .js(&env)
    }

    /// Tombstone a row.
    #[napi(
        catch_unwind,
        ts_args_type = "table: string, pk: Record<string, unknown>"
    )]
    pub fn delete(&mut self, env: Env, table: JsTable, pk: JsKey) -> Result<String> {
        self.e(&env)?.delete(&table.0, pk.0).js(&env)
    }
}
