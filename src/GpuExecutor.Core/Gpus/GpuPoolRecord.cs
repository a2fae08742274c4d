using System.Globalization;
using GpuExecutor.HostFiles;

namespace GpuExecutor.Gpus;

/// <summary>
/// The runner's GPU pool as prepare last saw it (index, UUID, model), kept in
/// state_dir/gpus/pool.tsv so that the metrics can say which GPUs are free without an
/// nvidia-smi call of their own. Rewritten only when it changes.
/// </summary>
public static class GpuPoolRecord
{
    public sealed record PoolGpu(int Index, string Uuid, string Model);

    public static string PathOf(string stateDir) => Path.Combine(stateDir, "gpus", "pool.tsv");

    public static void Write(string stateDir, IReadOnlyList<GpuDevice> pool)
    {
        var text = string.Concat(pool.OrderBy(gpu => gpu.Index).Select(gpu => $"{gpu.Index.ToString(CultureInfo.InvariantCulture)}\t{gpu.Uuid}\t{gpu.Name.Replace('\t', ' ')}\n"));
        var path = PathOf(stateDir);
        try
        {
            if (File.Exists(path) && File.ReadAllText(path) == text)
                return;
            StateFiles.WriteText(path, text);
        }
        catch (IOException)
        {
            // The record serves the metrics only: a prepare never fails for it.
        }
    }

    public static IReadOnlyList<PoolGpu> Read(string stateDir)
    {
        var path = PathOf(stateDir);
        if (!File.Exists(path))
            return [];
        var pool = new List<PoolGpu>();
        foreach (var line in File.ReadLines(path))
        {
            var fields = line.Split('\t');
            if (fields.Length == 3 && int.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var index))
                pool.Add(new PoolGpu(index, fields[1], fields[2]));
        }
        return pool;
    }
}
