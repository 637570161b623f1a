"""The gRPC surface: PaymentService, the interceptor, error mapping, conversions."""
