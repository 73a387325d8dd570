"""adaptive_data: adaptive training distributions with scalable online bilevel optimization."""
