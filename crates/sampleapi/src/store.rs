//! The in-process data that every surface (REST, GraphQL, gRPC) reads and writes, so a
//! user created over REST is visible over GraphQL and gRPC when they share one [`Store`].
//! Validation lives here too, so that the three surfaces reject the same inputs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

/// Largest quantity one order may carry; keeps the sample honest about validation.
pub const MAX_QUANTITY: u32 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub user_id: u64,
    pub item: String,
    pub quantity: u32,
}

/// The fields a client supplies to create or replace a user.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub name: String,
    pub email: String,
}

/// The fields a client supplies to create an order.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderInput {
    pub user_id: u64,
    pub item: String,
    pub quantity: u32,
}

/// Why a store operation was refused; each surface maps it to its own status vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    UserNotFound(u64),
    OrderNotFound(u64),
    /// The input broke a rule; the text says which, for the client.
    Invalid(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::UserNotFound(id) => write!(f, "user {id} not found"),
            StoreError::OrderNotFound(id) => write!(f, "order {id} not found"),
            StoreError::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for StoreError {}

#[derive(Default)]
struct Data {
    users: BTreeMap<u64, User>,
    orders: BTreeMap<u64, Order>,
    last_user_id: u64,
    last_order_id: u64,
}

/// Shared, cloneable handle to the data. Locks are never held across an `.await`, so a
/// plain `std::sync::RwLock` is enough.
#[derive(Clone, Default)]
pub struct Store {
    data: Arc<RwLock<Data>>,
}

impl Store {
    /// An empty store.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A store with three users and four orders, so a newcomer has something to look at.
    pub fn seeded() -> Self {
        let store = Self::empty();
        let seed_users = [
            ("Ada Lovelace", "ada@example.com"),
            ("Alan Turing", "alan@example.com"),
            ("Grace Hopper", "grace@example.com"),
        ];
        for (name, email) in seed_users {
            store
                .create_user(UserInput {
                    name: name.into(),
                    email: email.into(),
                })
                .expect("seed users are valid");
        }
        let seed_orders = [
            (1, "analytical engine", 1),
            (1, "punched cards", 500),
            (2, "bombe rotor", 3),
            (3, "compiler manual", 2),
        ];
        for (user_id, item, quantity) in seed_orders {
            store
                .create_order(OrderInput {
                    user_id,
                    item: item.into(),
                    quantity,
                })
                .expect("seed orders are valid");
        }
        store
    }

    pub fn list_users(&self) -> Vec<User> {
        self.read().users.values().cloned().collect()
    }

    pub fn get_user(&self, id: u64) -> Result<User, StoreError> {
        self.read()
            .users
            .get(&id)
            .cloned()
            .ok_or(StoreError::UserNotFound(id))
    }

    pub fn create_user(&self, input: UserInput) -> Result<User, StoreError> {
        validate_user(&input)?;
        let mut data = self.write();
        data.last_user_id += 1;
        let user = User {
            id: data.last_user_id,
            name: input.name,
            email: input.email,
        };
        data.users.insert(user.id, user.clone());
        Ok(user)
    }

    /// Replaces a user's fields (PUT semantics: the whole resource).
    pub fn replace_user(&self, id: u64, input: UserInput) -> Result<User, StoreError> {
        validate_user(&input)?;
        let mut data = self.write();
        let user = data
            .users
            .get_mut(&id)
            .ok_or(StoreError::UserNotFound(id))?;
        user.name = input.name;
        user.email = input.email;
        Ok(user.clone())
    }

    /// Deletes a user and their orders, so no order points at a missing user.
    pub fn delete_user(&self, id: u64) -> Result<User, StoreError> {
        let mut data = self.write();
        let user = data.users.remove(&id).ok_or(StoreError::UserNotFound(id))?;
        data.orders.retain(|_, order| order.user_id != id);
        Ok(user)
    }

    /// Every order, or only those of `user_id` when given.
    pub fn list_orders(&self, user_id: Option<u64>) -> Vec<Order> {
        self.read()
            .orders
            .values()
            .filter(|order| user_id.is_none_or(|wanted| order.user_id == wanted))
            .cloned()
            .collect()
    }

    pub fn get_order(&self, id: u64) -> Result<Order, StoreError> {
        self.read()
            .orders
            .get(&id)
            .cloned()
            .ok_or(StoreError::OrderNotFound(id))
    }

    pub fn create_order(&self, input: OrderInput) -> Result<Order, StoreError> {
        validate_order(&input)?;
        let mut data = self.write();
        if !data.users.contains_key(&input.user_id) {
            return Err(StoreError::UserNotFound(input.user_id));
        }
        data.last_order_id += 1;
        let order = Order {
            id: data.last_order_id,
            user_id: input.user_id,
            item: input.item,
            quantity: input.quantity,
        };
        data.orders.insert(order.id, order.clone());
        Ok(order)
    }

    // A panic while holding the lock cannot leave `Data` half-updated in a way that
    // matters for a sample API, so a poisoned lock is simply taken over.
    fn read(&self) -> RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Data> {
        self.data.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn validate_user(input: &UserInput) -> Result<(), StoreError> {
    if input.name.trim().is_empty() {
        return Err(StoreError::Invalid("name must not be empty".into()));
    }
    if !input.email.contains('@') {
        return Err(StoreError::Invalid("email must contain '@'".into()));
    }
    Ok(())
}

fn validate_order(input: &OrderInput) -> Result<(), StoreError> {
    if input.item.trim().is_empty() {
        return Err(StoreError::Invalid("item must not be empty".into()));
    }
    if input.quantity == 0 || input.quantity > MAX_QUANTITY {
        return Err(StoreError::Invalid(format!(
            "quantity must be between 1 and {MAX_QUANTITY}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_store_has_users_and_orders() {
        let store = Store::seeded();
        assert_eq!(store.list_users().len(), 3);
        assert_eq!(store.list_orders(None).len(), 4);
        assert_eq!(store.list_orders(Some(1)).len(), 2);
    }

    #[test]
    fn order_for_missing_user_is_refused() {
        let store = Store::seeded();
        let err = store
            .create_order(OrderInput {
                user_id: 42,
                item: "x".into(),
                quantity: 1,
            })
            .unwrap_err();
        assert_eq!(err, StoreError::UserNotFound(42));
    }

    #[test]
    fn deleting_a_user_deletes_their_orders() {
        let store = Store::seeded();
        store.delete_user(1).unwrap();
        assert!(store.list_orders(Some(1)).is_empty());
        assert_eq!(store.get_user(1), Err(StoreError::UserNotFound(1)));
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let store = Store::empty();
        let bad_email = UserInput {
            name: "a".into(),
            email: "nope".into(),
        };
        assert!(matches!(
            store.create_user(bad_email),
            Err(StoreError::Invalid(_))
        ));
    }
}
