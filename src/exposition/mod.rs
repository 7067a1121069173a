//! Exposition: the Prometheus text format 0.0.4 and OpenMetrics 1.0, chosen per scrape from
//! the `Accept` header. Three parts:
//!
//! - [`text`]: the text writers; label values from Atlas are escaped here, once;
//! - [`costs`]: the cost series, rendered once per refresh of their query and encoded once per
//!   published refresh, in both formats ([`encode_costs`]);
//! - [`invoices`]: the invoice source's families, encoded once per publication of an org;
//! - [`layout`]: the order of the published families, in one place;
//! - [`scrape`]: a scrape renders only the small state and self-metrics section and appends
//!   the pre-encoded bytes ([`render`]); scrapes within one second that would render the
//!   same bytes share one rendering ([`ScrapeCache`]).

pub mod costs;
pub mod invoices;
pub mod layout;
pub mod scrape;
pub mod text;

pub use self::costs::{RenderedSeries, encode_costs, render_sorted, render_tagged};
pub use self::scrape::{Format, ScrapeBody, ScrapeCache, accepts_gzip, negotiate, render};
pub use self::text::{
    escape_label_value, human_interval, label_text, openmetrics_to_text, push_label, push_micros,
    push_series_labels,
};
