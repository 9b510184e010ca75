import numpy as np
import pytest

from engine.portfolio import Portfolio


def test_portfolio_average_price_realized_and_flip() -> None:
    p = Portfolio(1, initial_cash=1000.0)
    p.apply_fill(0, 2.0, 100.0, fee=0.2)
    p.apply_fill(0, 1.0, 103.0, fee=0.1)
    assert p.positions[0] == 3.0
    assert p.avg_price[0] == pytest.approx(101.0)
    p.apply_fill(0, -4.0, 105.0, fee=0.4)  # close 3 at +4 each, open short 1 at 105
    assert p.positions[0] == -1.0
    assert p.avg_price[0] == 105.0
    assert p.realized[0] == pytest.approx(12.0 - 0.7)
    assert p.fees[0] == pytest.approx(0.7)
    mids = np.array([104.0])
    assert p.unrealized(mids)[0] == pytest.approx(1.0)
    # equity = cash + position * mid, and equals initial + realized + unrealized
    assert p.equity(mids) == pytest.approx(1000.0 + p.realized[0] + 1.0)


def test_portfolio_dust_is_rounded_away() -> None:
    p = Portfolio(1)
    p.apply_fill(0, 0.1, 10.0, 0.0)
    p.apply_fill(0, 0.2, 10.0, 0.0)
    p.apply_fill(0, -0.3, 10.0, 0.0)
    assert p.positions[0] == 0.0
    assert p.avg_price[0] == 0.0
