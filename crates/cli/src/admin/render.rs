//! How answers look to people: lists as tables of chosen columns, one object as field/value
//! lines. Money columns turn minor units into a decimal amount.

use serde_json::Value;

use super::table;

pub struct Column {
    header: &'static str,
    field: &'static str,
    money: bool,
}

const fn text(header: &'static str, field: &'static str) -> Column {
    Column { header, field, money: false }
}

const fn money(header: &'static str, field: &'static str) -> Column {
    Column { header, field, money: true }
}

pub const SALE_COLUMNS: [Column; 10] = [
    text("ID", "id"),
    text("NAME", "name"),
    text("STATUS", "status"),
    money("PRICE", "price_cents"),
    text("STOCK", "stock"),
    text("AVAILABLE", "available"),
    text("HELD", "held"),
    text("SOLD", "sold"),
    text("STARTS_AT", "starts_at"),
    text("ENDS_AT", "ends_at"),
];

pub const AUCTION_COLUMNS: [Column; 7] = [
    text("ID", "id"),
    text("TITLE", "title"),
    text("STATUS", "status"),
    money("PRICE", "current_price_cents"),
    text("BIDS", "bid_count"),
    text("LEADER", "leader_id"),
    text("ENDS_AT", "ends_at"),
];

pub const BAN_COLUMNS: [Column; 3] = [text("SUBJECT", "subject"), text("UNTIL", "until"), text("REASON", "reason")];

/// The array `answer[field]` as a table, a header line first.
pub fn list(answer: &Value, field: &str, columns: &[Column]) -> String {
    let header = columns.iter().map(|column| column.header.to_owned()).collect();
    let items = answer[field].as_array().map_or(&[][..], Vec::as_slice);
    let rows = items.iter().map(|item| columns.iter().map(|column| column.cell(item)).collect());
    table::render(&std::iter::once(header).chain(rows).collect::<Vec<_>>())
}

/// One object as `field  value` lines, by field name.
pub fn record(answer: &Value) -> String {
    let Some(fields) = answer.as_object() else { return cell(answer) };
    let rows: Vec<Vec<String>> = fields.iter().map(|(name, value)| vec![name.clone(), cell(value)]).collect();
    table::render(&rows)
}

impl Column {
    fn cell(&self, item: &Value) -> String {
        let value = &item[self.field];
        match value.as_i64() {
            Some(cents) if self.money => decimal(cents),
            _ => cell(value),
        }
    }
}

/// A value as text: strings unquoted, nothing as `-`, anything nested as compact JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Minor units as a decimal amount with two places.
fn decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lists_show_the_chosen_columns_and_money_as_decimals() {
        let answer = json!({"bans": [{"subject": "user:u_1", "until": "2030-01-01T00:00:00Z", "reason": "bot"}]});
        let text = list(&answer, "bans", &BAN_COLUMNS);
        assert_eq!(text, "SUBJECT   UNTIL                 REASON\nuser:u_1  2030-01-01T00:00:00Z  bot\n");
        assert_eq!((decimal(12_900), decimal(5), decimal(-101)), ("129.00".into(), "0.05".into(), "-1.01".into()));
    }

    #[test]
    fn records_list_every_field() {
        let text = record(&json!({"id": "o_1", "payment_ref": null, "quantity": 2}));
        assert_eq!(text, "id           o_1\npayment_ref  -\nquantity     2\n");
    }
}
