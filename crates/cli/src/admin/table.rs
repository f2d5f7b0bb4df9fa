//! Plain-text tables: columns aligned, two spaces apart, the last one not padded.

/// Renders `rows` (the first one the header) as aligned lines.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let padding = widths[index] - cell.chars().count();
            line.extend(std::iter::repeat_n(' ', padding));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|cell| (*cell).to_owned()).collect()
    }

    #[test]
    fn columns_line_up_whatever_the_widths() {
        let rows = [row(&["ID", "NAME", "STOCK"]), row(&["s_1", "crème brûlée", "5"]), row(&["s_22", "x", "1000"])];
        assert_eq!(render(&rows), "ID    NAME          STOCK\ns_1   crème brûlée  5\ns_22  x             1000\n");
        assert_eq!(render(&[]), "");
    }
}
