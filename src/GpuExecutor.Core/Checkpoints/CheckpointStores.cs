using GpuExecutor.Storage;

namespace GpuExecutor.Checkpoints;

/// <summary>Opens the configured checkpoint store for a run: the one place that turns config into a repository.</summary>
public static class CheckpointStores
{
    public static (IObjectStore Store, CheckpointRepository Repository) Open(IObjectStoreOpener stores, Configuration.ExecutorConfig config, string runKey, Action<string> log)
    {
        var settings = config.Checkpoints;
        var store = stores.Open(settings.StoreOrLocal(config.StateDir));
        return (store, new CheckpointRepository(store, settings.Bucket, settings.Prefix, runKey, log, config.HostName));
    }
}
