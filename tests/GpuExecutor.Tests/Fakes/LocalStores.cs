using GpuExecutor.Configuration;
using GpuExecutor.Storage;

namespace GpuExecutor.Tests.Fakes;

/// <summary>Opens file stores only: the built-in checkpoint store, on the test's own directory.</summary>
public sealed class LocalStores : IObjectStoreOpener
{
    public IObjectStore Open(StoreSettings settings) =>
        settings.Kind == StoreKind.File ? new FileObjectStore(settings.Root!) : throw new InvalidOperationException("these tests use no S3 store");
}
