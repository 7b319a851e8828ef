//! Tests of the event collector.
