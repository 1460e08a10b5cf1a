//! (to be written)

use crate::stream::Stream;

pub fn install(_s: &mut Stream) {}
