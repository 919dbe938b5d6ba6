package mask_test

import (
	"fmt"

	"github.com/custos-dev/custos/internal/mask"
)

func ExampleMasker_Text() {
	m, err := mask.New(mask.Options{})
	if err != nil {
		panic(err)
	}
	for _, s := range []string{
		`invalid input syntax for type integer: "4242 4242 4242 4242"`,
		`Key (pan)=(378282246310005) already exists.`,
		`order 1000234 shipped 2024-03-01 12:30:45`,
		`swipe %B4242424242424242^DOE/JOHN^2512101000000000?`,
	} {
		out, c := m.Text(nil, []byte(s), mask.Last4)
		fmt.Printf("%s %+v\n", out, c)
	}
	out, _ := m.Text(nil, []byte("pan 4242424242424242"), mask.BINLast4)
	fmt.Printf("%s\n", out)
	// Output:
	// invalid input syntax for type integer: "**** **** **** 4242" {PANs:1 SAD:0}
	// Key (pan)=(***********0005) already exists. {PANs:1 SAD:0}
	// order 1000234 shipped 2024-03-01 12:30:45 {PANs:0 SAD:0}
	// swipe [track data removed] {PANs:0 SAD:1}
	// pan 424242******4242
}

func ExampleMasker_Number() {
	m, err := mask.New(mask.Options{})
	if err != nil {
		panic(err)
	}
	// An int8 or numeric value: detection replaces only a PAN.
	for _, v := range []string{"4242424242424242", "4242424242424241", "-4242424242424242.00"} {
		out, _ := m.Number([]byte(v), mask.Last4, false)
		fmt.Printf("%s\n", out)
	}
	// Output:
	// 1000000000004242
	// 4242424242424241
	// -1000000000004242.00
}

func ExampleMasker_JSON() {
	m, err := mask.New(mask.Options{})
	if err != nil {
		panic(err)
	}
	body := []byte(`{"card":{"number":"4242424242424241","cvc":"123"},"note":"paid with 5555555555554444","id":7}`)
	out, c, err := m.JSON(body, map[string]mask.Strategy{"$.card.number": mask.Last4}, true)
	if err != nil {
		panic(err) // not JSON: refuse the body
	}
	fmt.Printf("%s %+v\n", out, c)
	// Output:
	// {"card":{"number":"************4241","cvc":null},"note":"paid with ************4444","id":7} {PANs:2 SAD:1}
}

func ExampleFingerprint() {
	key := []byte("an audit key of at least 32 bytes!")
	h, last4 := mask.Fingerprint(key, []byte("4242 4242 4242 4242"))
	fmt.Println(len(h), last4)
	// Output:
	// 64 4242
}

func ExampleIsSADColumn() {
	for _, name := range []string{"cvv", "card_cvc2", "pinBlock", "track2_data", "pan", "shipping_address"} {
		fmt.Println(name, mask.IsSADColumn(name))
	}
	// Output:
	// cvv true
	// card_cvc2 true
	// pinBlock true
	// track2_data true
	// pan false
	// shipping_address false
}
