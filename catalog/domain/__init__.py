"""Values of the agencies' world, pure and shared by every floor: identifiers (ID, mobile,
credit codes), GB/T 2260 regions, addresses → regions, the official working-day calendar
and the injected clock.  Imports nothing of catalog but its errors."""
