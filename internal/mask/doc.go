// Package mask finds primary account numbers (PANs) and sensitive
// authentication data (SAD) in what custos sends back to clients, and masks
// or removes them. It is pure: no I/O, no logging, no global state; a
// [Masker] is configured once and safe for concurrent use.
//
// # PCI DSS basis
//
//   - 3.3.1: SAD (full track data, card verification codes, PINs and PIN
//     blocks) is not retained and never shown, not even masked. Track data
//     found in text is replaced by [TrackDataRemoved]; columns and JSON
//     members named like SAD ([IsSADColumn]) are dropped or nulled by the
//     caller (and by [Masker.JSON] itself).
//   - 3.4.1: a displayed PAN shows at most the BIN and the last four digits.
//     The default, [Last4], shows the last four only; [BINLast4] shows the
//     first six as well and is for decisions that grant it.
//   - 3.5.1: a stored PAN is unreadable. Audit records hold [Fingerprint]:
//     a keyed hash (HMAC-SHA256) of the whole PAN and its last four; the
//     [HMAC] strategy gives clients a keyed hash too, stable for joins. The
//     two must use different keys, so that what a client sees cannot be
//     matched against audit records.
//
// # What is a PAN
//
// Detection ([Contains], [Masker.Text], and the detection modes of
// [Masker.Number] and [Masker.JSON]) looks at runs: digits in which single
// separators, a space or a dash, may stand between two digits. A candidate
// is a sequence of consecutive digit groups of a run such that:
//
//   - it holds 12 to 19 digits;
//   - its separators are one and the same byte (4242-4242-4242-4242 and
//     4242 4242 4242 4242, not 4242-4242 4242-4242);
//   - if it has several groups, each but the last has at least three digits:
//     4-4-4-4, 4-6-5 (Amex), 4-6-4 (Diners), 4-4-5 and 4-3-3-3 (13 digits),
//     4-4-4-4-3 (19 digits) and any other such grouping are accepted; runs
//     of one- and two-digit groups (dates, lists) are not card numbers;
//   - nothing is glued to it: no letter or '*' right before or after it
//     (x4242424242424242 and 4242424242424242x are words, not PANs, and a
//     run touching '*' counts as masked already), no '+' right before it (a
//     phone number), no decimal point between it and other digits
//     (0.4242424242424242, 4242424242424242.50). Other bytes separate: '_',
//     '/', '=', quotes, brackets, punctuation, non-ASCII, so pm_4242…,
//     /cards/4242…, Key (pan)=(4242…) and "4242 4242 4242 4242" are found.
//     The separators around a candidate count as separating too: in
//     "3 4242424242424242" the PAN is found;
//   - its digits have a brand's IIN and a length valid for that brand: Visa
//     4 (13, 16, 19 digits); Mastercard 51-55 and 2221-2720 (16); Amex 34,
//     37 (15); Discover 6011, 644-649, 65, 622126-622925 (16-19); JCB
//     3528-3589 (16-19); Diners 300-305, 3095, 36, 38-39 (14-19); UnionPay 62
//     (16-19); Maestro 50, 56-69 (12-19);
//   - they pass the Luhn check;
//   - they are not one repeated digit, nor a sequence counting up or down
//     by one (0123456789012);
//   - it is not part of a hex token: letters, digits and dashes whose
//     dash-separated parts are all hexadecimal, at most 12 long, with a hex
//     letter or in the 8-4-4-4-12 shape of a UUID.
//
// So a run of 20 or more digits without separators is never a PAN, and
// neither are timestamps, order numbers or phone numbers; but a grouped run
// of more than 19 digits is searched group by group: in
// "4242 4242 4242 4242 4242" both 16-digit windows are PANs, and the union
// of what they hide is hidden. The public test numbers (4242424242424242,
// 5555555555554444, 378282246310005, …) are PANs like any other: there is
// no list of numbers to skip.
//
// # Track data
//
// Track 1 (%B<PAN>^<NAME>^<YYMM><service code><data>?) and track 2
// (;<PAN>=<YYMM><service code><data>?) are found with or without their
// sentinels; without them the PAN must be a valid one and an expiry date
// must follow. The whole track, sentinels included, is replaced by
// [TrackDataRemoved] under every strategy.
//
// # Strategies
//
// [Last4] (default) and [BINLast4] turn hidden digits into '*' and keep
// every other byte in place ("**** **** **** 4242"); [Redact] writes
// [Redacted]; [Null] and [Drop] make a value NULL (in free text they write
// [Redacted]); [HMAC] writes the hex HMAC-SHA256 of the digits. Values of
// numeric types keep their type ([Masker.Number]): 4242424242424242 becomes
// 1000000000004242, a number of the same length that no brand starts with.
//
// # Guarantees
//
// The tests and fuzz targets check these properties:
//
//   - text without a PAN or track data comes back byte for byte (the same
//     slice, without a copy);
//   - the output of Text holds nothing detection would find, so none of
//     the input's PANs; Text re-scans its own output to make sure;
//   - masking is idempotent: masking the output changes nothing;
//   - under Last4 and BINLast4 only digits change, to '*', unless track
//     data was removed;
//   - JSON output is valid JSON whenever the input is, and invalid input is
//     refused (ErrJSON): a body that cannot be inspected must not pass.
//
// # Speed
//
// Text and Contains read one byte in twelve while no digit is near: a PAN
// needs at least twelve bytes, so a byte that can be no part of a run lets
// the scan jump past it. Text allocates nothing when it finds nothing.
package mask
