package mask

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func TestBrand(t *testing.T) {
	t.Parallel()
	tests := []struct{ pan, brand string }{
		{"4242424242424242", "visa"},
		{"4222222222222", "visa"},
		{"4000000000000000006", "visa"},
		{"424242424242424", ""}, // Visa has no 15-digit PANs
		{"5555555555554444", "mastercard"},
		{"5100000000000000", "mastercard"},
		{"2221000000000009", "mastercard"},
		{"2720999999999996", "mastercard"},
		{"2220999999999999", ""},
		{"2721000000000000", ""},
		{"555555555555444", ""}, // Mastercard is 16 digits only
		{"378282246310005", "amex"},
		{"340000000000000", "amex"},
		{"3782822463100050", ""},
		{"6011111111111117", "discover"},
		{"6440000000000005", "discover"},
		{"6221260000000000", "discover"},
		{"3530111333300000", "jcb"},
		{"3589000000000000", "jcb"},
		{"3056930009020004", "diners"},
		{"30569309025904", "diners"},
		{"3095000000000000", "diners"},
		{"3600000000000008", "diners"},
		{"3900000000000000", "diners"},
		{"3060000000000000", ""},
		{"3096000000000000", ""},
		{"6200000000000005", "unionpay"},
		{"501800000009", "maestro"},
		{"560000000000", "maestro"},
		{"690000000000", "maestro"},
		{"620000000000", "maestro"}, // 12 digits: Maestro only
		{"700000000000", ""},
		{"100000000000", ""},
		{"42424242424", ""},          // 11 digits
		{"42424242424242424242", ""}, // 20 digits
	}
	for _, tt := range tests {
		if got := brand([]byte(tt.pan)); got != tt.brand {
			t.Errorf("brand(%s) = %q, want %q", tt.pan, got, tt.brand)
		}
	}
}

func TestLuhn(t *testing.T) {
	t.Parallel()
	for _, pan := range testPANs {
		if !luhn([]byte(pan)) {
			t.Errorf("luhn(%s) = false", pan)
		}
		// Changing any one digit breaks the check.
		for i := range pan {
			b := []byte(pan)
			b[i] = bump(b[i])
			if luhn(b) {
				t.Errorf("luhn(%s) = true", b)
			}
		}
	}
}

func TestTrivial(t *testing.T) {
	t.Parallel()
	for _, d := range []string{"6666666666666", "0000000000000000", "0123456789012", "4567890123456789012", "9876543210987", "2109876543210"} {
		if !trivial([]byte(d)) {
			t.Errorf("trivial(%s) = false", d)
		}
	}
	for _, d := range testPANs {
		if trivial([]byte(d)) {
			t.Errorf("trivial(%s) = true", d)
		}
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	mac := hmac.New(sha256.New, testKey)
	mac.Write([]byte("4242424242424242"))
	want := hex.EncodeToString(mac.Sum(nil))
	for _, pan := range []string{"4242424242424242", "4242 4242 4242 4242", "4242-4242-4242-4242"} {
		h, last4 := Fingerprint(testKey, []byte(pan))
		if h != want || last4 != "4242" {
			t.Errorf("Fingerprint(%q) = %s, %s", pan, h, last4)
		}
	}
	if h, _ := Fingerprint([]byte("another key, another fingerprint"), []byte("4242424242424242")); h == want {
		t.Error("the fingerprint does not depend on the key")
	}
	if _, last4 := Fingerprint(testKey, []byte("12")); last4 != "12" {
		t.Errorf("short: last4 %q", last4)
	}
}

func TestIsSADColumn(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		"cvv", "CVV", "cvc", "cvv2", "CVC2", "cvc_2", "cid", "csc", "security_code", "SecurityCode",
		"card_verification_value", "card_verification_code", "cardVerificationValue", "card_cvv", "cvv_code",
		"cardCVV", "cardcvv", "cvvcode", "icvv", "cav2", "cvn2", "cvd",
		"pin", "PIN", "card_pin", "pin_code", "pinBlock", "PINBlock", "pin_block", "encrypted_pin_block", "Card PIN",
		"pvv", "pin_offset", "track1", "track2", "track_1", "Track2", "track_data", "trackData", "track2_equivalent",
		"magstripe", "mag_stripe", "magnetic_stripe_data", "full_track", "card.cvv", "payment-cvc",
	} {
		if !IsSADColumn(name) {
			t.Errorf("IsSADColumn(%q) = false", name)
		}
	}
	for _, name := range []string{
		"", "id", "pan", "card_number", "last4", "expiry", "exp_month", "holder", "cardholder_name",
		"shipping_address", "mapping", "opinion", "spinner", "is_pinned", "pinterest_url", "incident_id",
		"decided_at", "cidr", "acid", "rcv_count", "service_code", "track", "tracking_number", "backtrack",
		"audit_track_id", "description", "pi", "cv",
	} {
		if IsSADColumn(name) {
			t.Errorf("IsSADColumn(%q) = true", name)
		}
	}
}
