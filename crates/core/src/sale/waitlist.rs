//! The waitlist side of a sale: joining, serving released units first come first served,
//! and who may still buy while people wait.

use super::{Sale, SaleError, Touched, WaitlistEntry, WaitlistStatus};
use crate::types::{Quantity, Timestamp, UserId};

impl Sale {
    /// Units a new buyer can take: none while anyone waits, because released units are the
    /// waitlist's first (the head may be waiting for more units than are free yet).
    pub fn buyable(&self) -> u32 {
        let start = self.waitlist_head.min(self.waitlist.len());
        let someone_waits = self.waitlist[start..].iter().any(|entry| entry.status == WaitlistStatus::Waiting);
        if someone_waits {
            0
        } else {
            self.available
        }
    }

    /// Grants holds to waiting users in order while units suffice. An entry that can no longer
    /// be served is dropped: its user would pass the limit, or fewer units than it wants are
    /// still free or held (paid units never come back), so waiting could only block others.
    pub(super) fn serve_waitlist(&mut self, now: Timestamp, touched: &mut Touched) {
        while let Some(index) = self.first_waiting() {
            let entry = &self.waitlist[index];
            let (user, wanted) = (entry.user.clone(), entry.quantity);
            let over_limit = self.units_of(&user) + wanted > self.config.per_user_limit;
            let unservable = self.available + self.held < wanted;
            if over_limit || unservable {
                self.waitlist[index].status = WaitlistStatus::Dropped;
                touched.waitlist.push(index as u32);
                continue;
            }
            if self.available < wanted {
                break;
            }
            let seq = self.create_hold(user, wanted, None, now);
            self.waitlist[index].status = WaitlistStatus::Granted(seq);
            touched.orders.push(seq);
            touched.waitlist.push(index as u32);
        }
    }

    pub(super) fn first_waiting(&mut self) -> Option<usize> {
        self.advance_waitlist_head();
        (self.waitlist_head < self.waitlist.len()).then_some(self.waitlist_head)
    }

    pub(super) fn advance_waitlist_head(&mut self) {
        while self.waitlist.get(self.waitlist_head).is_some_and(|entry| entry.status != WaitlistStatus::Waiting) {
            self.waitlist_head += 1;
        }
    }

    /// Joins the waitlist; returns the entry's 1-based place among those still waiting.
    pub fn join_waitlist(
        &mut self,
        user: &UserId,
        quantity: Quantity,
        now: Timestamp,
        touched: &mut Touched,
    ) -> Result<u32, SaleError> {
        let units = quantity.get();
        if units > self.config.per_user_limit {
            return Err(SaleError::InvalidQuantity);
        }
        if !self.in_window(now) {
            return Err(SaleError::NotLive);
        }
        if self.waitlist_place(user).is_some() {
            return Err(SaleError::AlreadyWaitlisted);
        }
        if self.units_of(user) + units > self.config.per_user_limit {
            return Err(SaleError::LimitReached);
        }
        if self.buyable() >= units {
            return Err(SaleError::StockAvailable);
        }
        if self.available + self.held < units {
            // Nothing held can come back to make up the quantity: waiting would be in vain.
            return Err(SaleError::SoldOut);
        }
        let index = self.waitlist.len() as u32;
        self.waitlist.push(WaitlistEntry {
            position: index,
            user: user.clone(),
            quantity: units,
            joined_at: now,
            status: WaitlistStatus::Waiting,
        });
        touched.waitlist.push(index);
        Ok(self.waiting_ahead_of(index as usize) + 1)
    }

    /// 1-based place of the user's waiting entry, if they have one.
    pub fn waitlist_place(&self, user: &UserId) -> Option<u32> {
        let start = self.waitlist_head.min(self.waitlist.len());
        let index = self.waitlist[start..]
            .iter()
            .position(|entry| entry.status == WaitlistStatus::Waiting && &entry.user == user)?;
        Some(self.waiting_ahead_of(start + index) + 1)
    }

    pub(super) fn waiting_ahead_of(&self, index: usize) -> u32 {
        let start = self.waitlist_head.min(index);
        self.waitlist[start..index].iter().filter(|entry| entry.status == WaitlistStatus::Waiting).count() as u32
    }

    pub fn waiting_count(&self) -> u32 {
        self.waiting_ahead_of(self.waitlist.len())
    }
}
