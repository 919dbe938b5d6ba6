package pgfilter_test

import (
	"testing"

	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

func TestMain(m *testing.M) { pgfiltertest.Main(m) }
