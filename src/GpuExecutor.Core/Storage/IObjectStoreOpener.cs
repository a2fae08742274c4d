using GpuExecutor.Configuration;

namespace GpuExecutor.Storage;

/// <summary>Opens a configured store: an S3 client or a host directory. Created only by the composition root.</summary>
public interface IObjectStoreOpener
{
    IObjectStore Open(StoreSettings settings);
}
