using System.Security.Cryptography;
using System.Text;
using GpuExecutor.HostFiles;

namespace GpuExecutor.Gpus;

/// <summary>
/// `nvidia-smi topo -m` as printed, kept under a key line naming the boot, the nvidia-smi
/// program and the host's GPU UUIDs. A reboot or a GPU falling off the bus changes the key, and
/// the matrix is read again; a cache that cannot be read or parsed is simply not used.
/// </summary>
internal sealed class TopologyCache
{
    private const string BootIdPath = "/proc/sys/kernel/random/boot_id";

    private readonly string _path;
    private readonly string? _key;

    private TopologyCache(string path, string? key)
    {
        _path = path;
        _key = key;
    }

    public static TopologyCache For(string directory, string program, IReadOnlyList<GpuDevice> inventory)
    {
        string? bootId;
        try
        {
            bootId = File.ReadAllText(BootIdPath).Trim();
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            bootId = null;
        }
        var gpus = string.Join(",", inventory.Select(gpu => gpu.Uuid).Order(StringComparer.Ordinal));
        // Hashed, so the key stays one short line whatever the program path holds.
        var digest = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{program}\n{gpus}")));
        return new TopologyCache(Path.Combine(directory, "nvidia-smi-topo.txt"), bootId is { Length: > 0 } ? $"# boot {bootId} gpus {digest}" : null);
    }

    public GpuTopology? TryRead()
    {
        if (_key is null)
            return null;
        try
        {
            var text = File.ReadAllText(_path);
            var newline = text.IndexOf('\n', StringComparison.Ordinal);
            return newline > 0 && text[..newline] == _key ? GpuTopology.Parse(text[(newline + 1)..]) : null;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }

    /// <summary>Written whole or not at all (temp file, then rename), so a reader never sees half.</summary>
    public void Write(string output, Action<string> log)
    {
        if (_key is null)
            return;
        try
        {
            StateFiles.WriteText(_path, _key + "\n" + output);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            // A cache that cannot be written only costs the next prepare a `topo -m`.
            log($"WARNING: could not cache the GPU topology in '{_path}': {error.Message}");
        }
    }
}
