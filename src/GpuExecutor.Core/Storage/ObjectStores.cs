using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Storage;

public static class ObjectStores
{
    public static IObjectStore Open(StoreSettings settings) => settings.Kind switch
    {
        StoreKind.File => new FileObjectStore(settings.Root!),
        _ => new S3ObjectStore(settings),
    };
}
