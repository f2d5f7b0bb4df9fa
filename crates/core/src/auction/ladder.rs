//! Bid increments that grow with the price, so a cent-sized step is not the minimum raise on a
//! lot that already costs thousands, nor a hundred-euro step the minimum on a cheap one.

use crate::types::ValidationError;

/// Price-dependent bid increments: `(from_cents, increment_cents)` steps, sorted, first from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    /// Invariant (checked by `new`): non-empty, `steps[0].0 == 0`, `from` strictly increasing,
    /// every increment at least 1. `increment_at` relies on it and never fails.
    steps: Vec<(i64, i64)>,
}

impl Ladder {
    /// Default table like the big auction sites (in cents): from 0: 5; 100: 25; 500: 50;
    /// 2500: 100; 10000: 250; 25000: 500; 50000: 1000; 100000: 2500; 250000: 5000; 500000: 10000.
    pub fn standard() -> Self {
        let steps = vec![
            (0, 5),
            (100, 25),
            (500, 50),
            (2_500, 100),
            (10_000, 250),
            (25_000, 500),
            (50_000, 1_000),
            (100_000, 2_500),
            (250_000, 5_000),
            (500_000, 10_000),
        ];
        Self { steps }
    }

    /// Validates a custom table: non-empty, first step from 0 (so every price has an increment),
    /// `from` strictly increasing (so the step at a price is unambiguous), increments of at least
    /// 1 cent (so a new bid always has to beat the current price).
    pub fn new(steps: Vec<(i64, i64)>) -> Result<Self, ValidationError> {
        const FIELD: &str = "increments";
        match steps.first() {
            None => return Err(ValidationError::new(FIELD, "must have at least one step")),
            Some(&(from, _)) if from != 0 => return Err(ValidationError::new(FIELD, "the first step must start at 0")),
            Some(_) => {}
        }
        if steps.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err(ValidationError::new(FIELD, "steps must start at strictly increasing prices"));
        }
        if steps.iter().any(|&(_, increment)| increment < 1) {
            return Err(ValidationError::new(FIELD, "every increment must be at least 1 cent"));
        }
        Ok(Self { steps })
    }

    pub fn steps(&self) -> &[(i64, i64)] {
        &self.steps
    }

    /// The increment that applies at this price: the step with the largest `from <= price`.
    /// A negative price (never a real one) gets the first step rather than a panic.
    pub fn increment_at(&self, price_cents: i64) -> i64 {
        let after = self.steps.partition_point(|&(from, _)| from <= price_cents);
        let index = after.saturating_sub(1);
        self.steps.get(index).map_or(1, |&(_, increment)| increment)
    }
}
